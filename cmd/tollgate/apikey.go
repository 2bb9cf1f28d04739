package main

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tollgate/tollgate/client"
	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/gen/tollgate/v1/tollgatev1connect"
)

func init() { clientCommands = append(clientCommands, newAPIKeyCommand) }

func apiKeyService(c *client.Client) tollgatev1connect.ApiKeyServiceClient { return c.APIKeys }

func newAPIKeyCommand() *cobra.Command {
	cmd := withUsageErrors(newGroupCommand("apikey",
		"Create, list and revoke API keys",
		`API keys are long-lived credentials for machines, bound to one tenant and one
role (admin, tenant-admin, spender, reader) like a token. The cluster keeps only
the SHA-256 of a key's secret; 'apikey create' prints the secret once. Send it
as the bearer token ('--token-file', TOLLGATE_TOKEN, or 'Authorization: Bearer').
Creating and revoking go through Raft and get receipts.`,
		`  tollgate apikey create --tenant acme --role spender --name ci --ttl 720h
  tollgate apikey list --tenant acme
  tollgate apikey revoke kabcdefghijklmnop --tenant acme`))
	cf := addClientFlags(cmd, true)
	cmd.AddCommand(newAPIKeyCreateCommand(cf), newAPIKeyListCommand(cf), newAPIKeyRevokeCommand(cf))
	return cmd
}

func apiKeyRow(k *tollgatev1.ApiKey) []string {
	state := "active"
	switch {
	case k.RevokedAt != nil:
		state = "revoked " + formatTime(k.RevokedAt)
	case k.ExpiresAt != nil && !k.ExpiresAt.AsTime().After(time.Now()):
		state = "expired"
	}
	expires := "never"
	if k.ExpiresAt != nil {
		expires = formatTime(k.ExpiresAt)
	}
	return []string{k.Id, k.Role, orDash(k.Name), formatTime(k.CreatedAt), orDash(k.CreatedBy), expires, state}
}

var apiKeyHeader = []string{"ID", "ROLE", "NAME", "CREATED", "BY", "EXPIRES", "STATE"}

func newAPIKeyCreateCommand(cf *clientFlags) *cobra.Command {
	var role, name, requestID string
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "create --role ROLE [--name NAME] [--ttl DURATION]",
		Short: "Make an API key and print its secret (shown only once)",
		Args:  argsExactly(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireFlags(cmd, "role"); err != nil {
				return err
			}
			if ttl < 0 {
				return usageErrorf(cmd, "--ttl %s: must not be negative", ttl)
			}
			req := &tollgatev1.CreateApiKeyRequest{Tenant: cf.tenant, Role: role, Name: name, RequestId: requestID}
			if ttl > 0 {
				req.Ttl = durationpb.New(ttl)
			}
			resp, err := unary(cmd, cf, apiKeyService, tollgatev1connect.ApiKeyServiceClient.CreateApiKey, req)
			if err != nil {
				return err
			}
			if err := printFields(cmd, cf, resp, field{"key", resp.Key.Id}, field{"tenant", resp.Key.Tenant}, field{"role", resp.Key.Role},
				field{"name", resp.Key.Name}, field{"secret", resp.Secret}); err != nil {
				return err
			}
			if cf.output == outputTable {
				fmt.Fprintln(cmd.ErrOrStderr(), "The secret is shown only now: store it; the cluster keeps only its hash.")
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&role, "role", "", "admin, tenant-admin, spender or reader (at most your own role)")
	cmd.Flags().StringVar(&name, "name", "", "a label for people (at most 128 bytes)")
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "how long the key is valid (default: until revoked)")
	addRequestIDFlag(cmd, &requestID)
	return cmd
}

func newAPIKeyListCommand(cf *clientFlags) *cobra.Command {
	var all bool
	cmd := &cobra.Command{Use: "list", Short: "List the tenant's API keys (never their secrets)", Args: argsExactly()}
	cmd.Flags().BoolVar(&all, "all", false, "also revoked and expired keys")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		resp, err := unary(cmd, cf, apiKeyService, tollgatev1connect.ApiKeyServiceClient.ListApiKeys,
			&tollgatev1.ListApiKeysRequest{Tenant: cf.tenant, IncludeInactive: all})
		if err != nil {
			return err
		}
		return printReply(cmd, cf, resp, func(w io.Writer) {
			var rows [][]string
			for _, k := range resp.Keys {
				rows = append(rows, apiKeyRow(k))
			}
			writeTable(w, apiKeyHeader, rows)
		})
	}
	return cmd
}

func newAPIKeyRevokeCommand(cf *clientFlags) *cobra.Command {
	var requestID string
	cmd := &cobra.Command{
		Use:   "revoke KEY_ID",
		Short: "Revoke an API key: every node refuses it once it applied the revocation",
		Args:  argsExactly("KEY_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := unary(cmd, cf, apiKeyService, tollgatev1connect.ApiKeyServiceClient.RevokeApiKey,
				&tollgatev1.RevokeApiKeyRequest{Tenant: cf.tenant, Id: args[0], RequestId: requestID})
			if err != nil {
				return err
			}
			return printFields(cmd, cf, resp, field{"key", resp.Key.Id}, field{"revoked at", formatTime(resp.Key.RevokedAt)},
				field{"revoked by", resp.Key.RevokedBy})
		},
	}
	addRequestIDFlag(cmd, &requestID)
	return cmd
}
