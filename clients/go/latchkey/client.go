// Package latchkey is the Go client of latchkey, passwordless email
// authentication over gRPC: a connection with the API key sent on every call
// (New), the error details of a failed call (Reason, RetryAfter, Field), and a
// local verifier of access tokens (Verifier) with an http.Handler middleware.
//
// The generated code is in package latchkeyv1: the request and response
// messages, and the AuthService and AdminService clients that Client holds.
package latchkey

import (
	"context"
	"crypto/tls"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	latchkeyv1 "github.com/latchkey/latchkey/clients/go/latchkeyv1"
)

// Client is a connection to latchkey's gRPC listener. Auth and Admin are the
// generated clients; every call they make carries the API key.
type Client struct {
	// Auth logs users in: StartAuth, Verify, Refresh, Revoke, GetJwks, …
	Auth latchkeyv1.AuthServiceClient
	// Admin manages tenants, API keys and users (it needs an admin key).
	Admin latchkeyv1.AdminServiceClient

	conn *grpc.ClientConn
}

// An Option configures New.
type Option func(*options)

type options struct {
	apiKey  string
	tls     *tls.Config
	timeout time.Duration
	dial    []grpc.DialOption
}

// WithAPIKey sends `authorization: Bearer <key>` with every call: an app key
// (lk_app_…) for AuthService, an admin key for AdminService.
func WithAPIKey(key string) Option {
	return func(o *options) { o.apiKey = key }
}

// WithTLS connects over TLS (a nil config uses the system's roots). Without
// it the connection is plaintext, for a latchkey on the same host or behind a
// proxy that terminates TLS.
func WithTLS(config *tls.Config) Option {
	return func(o *options) {
		if config == nil {
			config = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		o.tls = config
	}
}

// WithTimeout bounds each call whose context has no deadline (default 10 s;
// zero: no bound).
func WithTimeout(d time.Duration) Option {
	return func(o *options) { o.timeout = d }
}

// WithDialOptions adds gRPC dial options (interceptors, keepalive, …).
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dial = append(o.dial, opts...) }
}

// New connects to target, latchkey's gRPC listener as host:port. It does not
// wait for the connection: the first call does.
func New(target string, opts ...Option) (*Client, error) {
	o := options{timeout: 10 * time.Second}
	for _, opt := range opts {
		opt(&o)
	}
	dial := []grpc.DialOption{grpc.WithUnaryInterceptor(defaultTimeout(o.timeout))}
	if o.tls != nil {
		dial = append(dial, grpc.WithTransportCredentials(credentials.NewTLS(o.tls)))
	} else {
		dial = append(dial, grpc.WithInsecure())
	}
	if o.apiKey != "" {
		dial = append(dial, grpc.WithPerRPCCredentials(apiKey{key: o.apiKey, secure: o.tls != nil}))
	}
	conn, err := grpc.Dial(target, append(dial, o.dial...)...)
	if err != nil {
		return nil, err
	}
	return &Client{
		Auth:  latchkeyv1.NewAuthServiceClient(conn),
		Admin: latchkeyv1.NewAdminServiceClient(conn),
		conn:  conn,
	}, nil
}

// Close closes the connection.
func (c *Client) Close() error {
	return c.conn.Close()
}

// apiKey is the per-RPC credential: the key in the authorization metadata.
type apiKey struct {
	key    string
	secure bool
}

func (k apiKey) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + k.key}, nil
}

// RequireTransportSecurity is true on a TLS connection, so that the key is
// never sent in clear if the transport were to change.
func (k apiKey) RequireTransportSecurity() bool {
	return k.secure
}

func defaultTimeout(d time.Duration) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply interface{}, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if _, ok := ctx.Deadline(); !ok && d > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, d)
			defer cancel()
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}
