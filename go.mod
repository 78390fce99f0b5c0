module github.com/edgeproxy/edgeproxy

go 1.26

toolchain go1.27.3

require (
	github.com/BurntSushi/toml v1.6.0
	github.com/pires/go-proxyproto v0.15.0
	go.uber.org/goleak v1.3.0
)

require pgregory.net/rapid v1.3.0
