package cluster_test

import (
	"crypto/rand"
	"encoding/base64"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/tollgate/tollgate/test/procs"
)

// TestGossipKeyKeepsStrangersOut ([security]: gossip without the key): a
// cluster whose gossip is encrypted with a key and labelled never lists a
// server that joins without the key, nor one with another key; a server
// with the key joins and becomes a voter.
func TestGossipKeyKeepsStrangersOut(t *testing.T) {
	dir := t.TempDir()
	writeKey := func(name string) string {
		key := make([]byte, 32)
		rand.Read(key)
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	key, other := writeKey("gossip.key"), writeKey("other.key")
	c := procs.NewCluster(t, 3, procs.Options{Extra: []string{"--gossip-key-file", key, "--gossip-label", "prod"}})
	c.StartAll()
	leader := c.WaitLeader(30 * time.Second)

	withoutKey := c.AddNode()
	withoutKey.Args = slices.DeleteFunc(withoutKey.Args, func(a string) bool { return a == "--gossip-key-file" || a == key })
	wrongKey := c.AddNode()
	for i, a := range wrongKey.Args {
		if a == key {
			wrongKey.Args[i] = other
		}
	}
	c.Start(withoutKey)
	c.Start(wrongKey)
	members := func() []string {
		st, err := c.Status(leader, false, false)
		if err != nil {
			return nil
		}
		var ids []string
		for _, m := range st.Members {
			ids = append(ids, m.Id)
		}
		return ids
	}
	// Strangers never show up (watched for 3s: with fast membership a
	// gossip join takes well under a second).
	var ids []string
	if procs.Poll(3*time.Second, 100*time.Millisecond, func() bool {
		ids = members()
		return slices.Contains(ids, withoutKey.ID) || slices.Contains(ids, wrongKey.ID)
	}) {
		t.Fatalf("a server without the gossip key got in: members %v", ids)
	}
	// The same key gets in.
	good := c.AddNode()
	c.Start(good)
	c.WaitVoters(30*time.Second, c.Nodes[0].ID, c.Nodes[1].ID, c.Nodes[2].ID, good.ID)
}
