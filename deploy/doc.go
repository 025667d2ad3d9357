// Package deploy holds the tests of the deployment files in this folder
// (Kubernetes manifests, alert rules, the etcd settings and role script, the
// systemd unit and the Dockerfiles), which check them against the code they
// deploy: the config struct, the contract's ports and paths, the metrics the
// code exports, and a real etcd with auth for the roles. README.md describes
// the files themselves.
//
// It must not hold product code: nothing imports it, and it has nothing to
// import but its tests.
package deploy
