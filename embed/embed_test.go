package embed

import (
	"os"
	"testing"
)

func TestAdvertisedAPIAddr(t *testing.T) {
	host, _ := os.Hostname()
	for _, tc := range []struct{ bound, raftAdv, raftAddr, want string }{
		{"127.0.0.1:7070", "", "127.0.0.1:7071", "127.0.0.1:7070"},
		{"[::]:7070", "", "10.0.0.5:7071", "10.0.0.5:7070"},
		{"0.0.0.0:7070", "n1:7071", "0.0.0.0:7071", "n1:7070"},
		{"[::]:7070", "", "0.0.0.0:7071", host + ":7070"},
	} {
		if got := advertisedAPIAddr(tc.bound, tc.raftAdv, tc.raftAddr); got != tc.want {
			t.Errorf("advertisedAPIAddr(%q, %q, %q) = %q, want %q", tc.bound, tc.raftAdv, tc.raftAddr, got, tc.want)
		}
	}
}
