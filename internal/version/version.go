// Package version holds the build's version, set by the Makefile with -ldflags -X.
package version

// Version is the release version; "dev" for a plain go build.
var Version = "0.1.0-dev"
