"""Generated from proto/latchkey/v1 by `buf generate` (see clients/README.md)."""
