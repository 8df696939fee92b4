package deploy

import "crypto/tls"

// insecureTLS is for the test's own loopback API server, whose certificate
// it generates itself on start.
func insecureTLS() *tls.Config {
	return &tls.Config{InsecureSkipVerify: true} //nolint:gosec // loopback test server with a self-made certificate
}
