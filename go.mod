module github.com/keyquorum/keyquorum

go 1.26.8

require (
	github.com/ebfe/scard v0.0.0-20241214075232-7af069cabc25 // indirect
	github.com/hashicorp/vault v1.21.4 // indirect
	github.com/miekg/pkcs11 v1.1.2 // indirect
	go.etcd.io/bbolt v1.5.0 // indirect
	golang.org/x/sys v0.45.0 // indirect
)
