package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tollgate/tollgate/auth"
)

func init() { clientCommands = append(clientCommands, newTLSCommand) }

// Bounds on what the helpers issue.
const (
	tlsValidityMax = 20 * 365 * 24 * time.Hour
	tlsNamesMax    = 100
)

func newTLSCommand() *cobra.Command {
	cmd := newGroupCommand("tls", "Make a cluster CA and server or client certificates",
		`Make the certificates of a cluster with mutual TLS: a CA ('tls ca') and, signed by
it, server certificates (one per server, naming the host names and IPs peers and
clients dial it at: they are verified) and client certificates ('tls cert'). A
certificate names its role (server or client) in a URI SAN
(urn:tollgate:role:...); only server certificates may speak Raft or call the
internal API, whatever CA signed a client's.

Keys are ECDSA P-256, written with mode 0600. These are helpers for development
and small clusters; any CA that puts the role URI in its certificates works.`,
		`  tollgate tls ca --out-dir pki
  tollgate tls cert --ca-dir pki --role server --name n1 --ip 10.0.0.1 --dns n1.internal --out-dir pki
  tollgate tls cert --ca-dir pki --role client --name ops --out-dir pki
  tollgate serve ... --tls-cert pki/n1.pem --tls-key pki/n1.key --tls-ca pki/ca.pem`)
	cmd.AddCommand(newTLSCACommand(), newTLSCertCommand())
	return withUsageErrors(cmd)
}

func newTLSCACommand() *cobra.Command {
	var outDir, name string
	var validity time.Duration
	var force bool
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "Make a cluster CA (ca.pem, ca.key)",
		Args:  argsExactly(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if outDir == "" {
				return usageErrorf(cmd, "--out-dir is required")
			}
			if validity < time.Hour || validity > tlsValidityMax {
				return usageErrorf(cmd, "--validity %s: want between 1h and %s", validity, tlsValidityMax)
			}
			cert, key, err := auth.NewCA(name, validity)
			if err != nil {
				return localError("%v", err)
			}
			if err := writeSecretFiles(outDir, force, map[string][]byte{"ca.pem": cert, "ca.key": key}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "CA %q  %s (give to every server and client)\nkey     %s (keep it offline; it signs certificates)\n",
				name, filepath.Join(outDir, "ca.pem"), filepath.Join(outDir, "ca.key"))
			return nil
		},
	}
	cmd.Flags().StringVar(&outDir, "out-dir", "", "directory for ca.pem and ca.key (created if missing)")
	cmd.Flags().StringVar(&name, "name", "tollgate cluster CA", "the CA's common name")
	cmd.Flags().DurationVar(&validity, "validity", 5*365*24*time.Hour, "how long the CA is valid")
	cmd.Flags().BoolVar(&force, "force", false, "overwrite existing files")
	return cmd
}

func newTLSCertCommand() *cobra.Command {
	var caDir, outDir, role, name string
	var dns []string
	var ips []string
	var validity time.Duration
	var force bool
	cmd := &cobra.Command{
		Use:   "cert",
		Short: "Issue a server or client certificate signed by the CA (NAME.pem, NAME.key)",
		Args:  argsExactly(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if caDir == "" || outDir == "" || name == "" {
				return usageErrorf(cmd, "--ca-dir, --name and --out-dir are required")
			}
			if role != auth.CertRoleServer && role != auth.CertRoleClient {
				return usageErrorf(cmd, "--role %q: want server or client", role)
			}
			if strings.ContainsAny(name, `/\`) || name == "." || name == ".." || name == "ca" {
				return usageErrorf(cmd, "--name %q: want a plain file name other than ca", name)
			}
			if validity < time.Hour || validity > tlsValidityMax {
				return usageErrorf(cmd, "--validity %s: want between 1h and %s", validity, tlsValidityMax)
			}
			if len(dns)+len(ips) > tlsNamesMax {
				return usageErrorf(cmd, "at most %d --dns and --ip names", tlsNamesMax)
			}
			spec := auth.CertSpec{Role: role, CommonName: name, DNSNames: dns, Validity: validity}
			for _, s := range ips {
				ip := net.ParseIP(s)
				if ip == nil {
					return usageErrorf(cmd, "--ip %q is not an IP address", s)
				}
				spec.IPs = append(spec.IPs, ip)
			}
			if role == auth.CertRoleServer && len(dns) == 0 && len(ips) == 0 {
				return usageErrorf(cmd, "a server certificate needs --dns or --ip: the names peers and clients dial it at (they are verified)")
			}
			caCert, err := os.ReadFile(filepath.Join(caDir, "ca.pem"))
			if err != nil {
				return localError("read the CA: %v", err)
			}
			caKey, err := os.ReadFile(filepath.Join(caDir, "ca.key"))
			if err != nil {
				return localError("read the CA key: %v", err)
			}
			cert, key, err := auth.NewCert(caCert, caKey, spec)
			if err != nil {
				return localError("%v", err)
			}
			if err := writeSecretFiles(outDir, force, map[string][]byte{name + ".pem": cert, name + ".key": key}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s certificate %q  %s\nkey  %s\n", role, name, filepath.Join(outDir, name+".pem"), filepath.Join(outDir, name+".key"))
			return nil
		},
	}
	cmd.Flags().StringVar(&caDir, "ca-dir", "", "directory holding ca.pem and ca.key ('tollgate tls ca')")
	cmd.Flags().StringVar(&outDir, "out-dir", "", "directory for NAME.pem and NAME.key (created if missing)")
	cmd.Flags().StringVar(&role, "role", "", "server (may speak Raft and call other servers) or client")
	cmd.Flags().StringVar(&name, "name", "", "common name, and the file name")
	cmd.Flags().StringSliceVar(&dns, "dns", nil, "host names the server is dialed at (comma separated or repeated)")
	cmd.Flags().StringSliceVar(&ips, "ip", nil, "IP addresses the server is dialed at")
	cmd.Flags().DurationVar(&validity, "validity", 365*24*time.Hour, "how long the certificate is valid (not past the CA)")
	cmd.Flags().BoolVar(&force, "force", false, "overwrite existing files")
	return cmd
}

// writeSecretFiles writes each file (mode 0600) durably into dir; none is
// written when one exists and force is off.
func writeSecretFiles(dir string, force bool, files map[string][]byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return localError("%v", err)
	}
	if !force {
		for name := range files {
			if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
				return localError("%s exists; use --force to overwrite it", filepath.Join(dir, name))
			} else if !errors.Is(err, os.ErrNotExist) {
				return localError("%v", err)
			}
		}
	}
	for name, data := range files {
		path := filepath.Join(dir, name)
		tmp, err := os.CreateTemp(dir, "."+name+".tmp*")
		if err != nil {
			return localError("%v", err)
		}
		if err := tmp.Chmod(0o600); err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
			return localError("%v", err)
		}
		if _, err := tmp.Write(data); err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
			return localError("write %s: %v", path, err)
		}
		if err := commitFile(tmp, path); err != nil {
			os.Remove(tmp.Name())
			return localError("write %s: %v", path, err)
		}
	}
	return nil
}
