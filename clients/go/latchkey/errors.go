package latchkey

import (
	"errors"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Domain is the ErrorInfo domain of latchkey's errors.
const Domain = "latchkey"

// statusOf finds the gRPC status in err, also when it is wrapped.
func statusOf(err error) (*status.Status, bool) {
	var withStatus interface{ GRPCStatus() *status.Status }
	if errors.As(err, &withStatus) {
		return withStatus.GRPCStatus(), true
	}
	return nil, false
}

func details(err error) (info *errdetails.ErrorInfo, retry *errdetails.RetryInfo, bad *errdetails.BadRequest) {
	st, ok := statusOf(err)
	if !ok {
		return nil, nil, nil
	}
	for _, detail := range st.Details() {
		switch d := detail.(type) {
		case *errdetails.ErrorInfo:
			info = d
		case *errdetails.RetryInfo:
			retry = d
		case *errdetails.BadRequest:
			bad = d
		}
	}
	return info, retry, bad
}

// Reason is the stable code of a failed call: "CODE_INVALID", "RATE_LIMITED",
// … (a latchkeyv1.ErrorReason value name without its ERROR_REASON_ prefix). It
// is "" when err carries no ErrorInfo (nil, a connection failure: see Code).
func Reason(err error) string {
	info, _, _ := details(err)
	return info.GetReason()
}

// RetryAfter is how long a rate-limited call asks to wait; ok is false when
// err says nothing about it.
func RetryAfter(err error) (wait time.Duration, ok bool) {
	_, retry, _ := details(err)
	if retry == nil || retry.GetRetryDelay() == nil {
		return 0, false
	}
	delay := retry.GetRetryDelay()
	return time.Duration(delay.GetSeconds())*time.Second + time.Duration(delay.GetNanos()), true
}

// Field is the request field at fault for an INVALID_ARGUMENT ("email", …),
// or "".
func Field(err error) string {
	info, _, bad := details(err)
	if field := info.GetMetadata()["field"]; field != "" {
		return field
	}
	if violations := bad.GetFieldViolations(); len(violations) > 0 {
		return violations[0].GetField()
	}
	return ""
}

// Code is the gRPC status code of err (codes.OK for nil, codes.Unknown for an
// error that is not a gRPC status), also when err is wrapped.
func Code(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	if st, ok := statusOf(err); ok {
		return st.Code()
	}
	return codes.Unknown
}
