// Package deploy holds the container deployment of tollgate: the FROM-scratch
// image (Dockerfile), a three-server cluster for one Docker host
// (compose.yaml), and a test that builds both from this tree and runs them.
// It has no Go code of its own; see README.md and DESIGN.md.
package deploy
