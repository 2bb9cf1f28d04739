package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/receipt"
)

func TestKeygen(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "cluster.key")
	r := runCLI(t, "keygen", "--out", key)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("keygen: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	privPEM, err := os.ReadFile(key)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := receipt.ParsePrivateKey(privPEM)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	pub, err := receipt.ParsePublicKey(pubPEM)
	if err != nil || !pub.Equal(priv.Public()) {
		t.Fatalf("the .pub file does not hold the private key's public half (%v)", err)
	}
	if st, err := os.Stat(key); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("private key file mode %v (%v), want 0600", st.Mode().Perm(), err)
	}
	if want := "key id       " + receipt.KeyID(pub) + "\n"; !strings.HasPrefix(r.stdout, want) {
		t.Fatalf("keygen printed %q, want it to start with %q", r.stdout, want)
	}
	// Never overwrites a key by accident.
	wantCLIError(t, runCLI(t, "keygen", "--out", key), exitFailure, "error: "+key+" exists; use --force to overwrite it\n", false)
	again, _ := os.ReadFile(key)
	if string(again) != string(privPEM) {
		t.Fatal("a refused keygen changed the key file")
	}
	if r := runCLI(t, "keygen", "--out", key, "--force"); r.code != 0 {
		t.Fatalf("keygen --force: exit %d %s", r.code, r.stderr)
	}
}

func TestReceiptCLIBadInput(t *testing.T) {
	usage := func(path string) string { return "\nRun '" + path + " --help' for usage.\n" }
	dir := t.TempDir()
	for _, tc := range []struct {
		args   []string
		stderr string
	}{
		{[]string{"keygen"}, "error: --out FILE is required" + usage("tollgate keygen")},
		{[]string{"receipt", "get"}, "error: give either --request-id (with --tenant) or --index (with --position)" + usage("tollgate receipt get")},
		{[]string{"receipt", "get", "--request-id", "r-1"}, "error: --request-id needs --tenant (or TOLLGATE_TENANT)" + usage("tollgate receipt get")},
		{[]string{"receipt", "get", "--request-id", "r-1", "--index", "4"}, "error: give either --request-id (with --tenant) or --index (with --position)" + usage("tollgate receipt get")},
		{[]string{"receipt", "verify", "r.json"}, "error: --public-key FILE is required (the cluster's key: tollgate keygen's .pub, or 'tollgate receipt keys')" + usage("tollgate receipt verify")},
		{[]string{"receipt", "verify"}, `error: "tollgate receipt verify" takes FILE|-; got 0 argument(s)` + usage("tollgate receipt verify")},
		{[]string{"receipt", "audit", "--from", "9", "--to", "3"}, "error: --to 3 is before --from 9" + usage("tollgate receipt audit")},
		{[]string{"receipt", "veriffy"}, `error: unknown command "veriffy" for "tollgate receipt"; did you mean verify?` + usage("tollgate receipt")},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			wantCLIError(t, runCLI(t, tc.args...), exitUsage, tc.stderr, false)
		})
	}

	key := filepath.Join(dir, "k")
	if r := runCLI(t, "keygen", "--out", key); r.code != 0 {
		t.Fatal(r.stderr)
	}
	notReceipt := filepath.Join(dir, "not-a-receipt.json")
	os.WriteFile(notReceipt, []byte(`{"hello": "world"}`), 0o600)
	r := runCLI(t, "receipt", "verify", "--public-key", key+".pub", notReceipt)
	if r.code != exitFailure || !strings.HasPrefix(r.stderr, "INVALID: malformed: not a receipt: ") {
		t.Fatalf("verify of a non-receipt: exit %d\n%s", r.code, r.stderr)
	}
	// A private key is not a public key file.
	wantCLIError(t, runCLI(t, "receipt", "verify", "--public-key", key, notReceipt), exitFailure, "error: --public-key "+key+": ", true)
	wantCLIError(t, runCLI(t, "receipt", "verify", "--public-key", filepath.Join(dir, "missing.pub"), notReceipt), exitFailure,
		"error: --public-key: open "+filepath.Join(dir, "missing.pub")+": no such file or directory\n", false)
}
