//go:build tools

// Package tools pins dependencies that helpers adopt before the code using them lands.
package tools
import (
 _ "github.com/prometheus/client_golang/prometheus"
 _ "golang.org/x/net/ipv4"
 _ "golang.org/x/sys/unix"
 _ "go.uber.org/goleak"
 _ "gopkg.in/yaml.v3"
)
