#!/usr/bin/env bash
# `protoc -I proto` with nothing but the repository's files and no extra
# flags generates code for the languages the protos name a package for (Java,
# C#, Objective-C, PHP, Ruby), and the Java compiles with javac against
# protobuf-java when both are installed (Debian: protobuf-compiler,
# libprotobuf-java, default-jdk-headless). Go, when protoc-gen-go and
# protoc-gen-go-grpc are installed: the same code as clients/go/latchkeyv1,
# which compiles (clients/go/go.sh vet in CI).
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
files=(latchkey/v1/auth.proto latchkey/v1/admin.proto)

for lang in java csharp objc php ruby; do
    mkdir "$out/$lang"
    protoc -I proto "--${lang}_out=$out/$lang" "${files[@]}"
done

expect() { # file, text
    grep -qF -- "$2" "$out/$1" || { echo "protoc check: $1 lacks '$2'" >&2; exit 1; }
}
# One Java class per message in dev.latchkey.v1 (java_multiple_files).
for class in StartAuthRequest ResendCodeResponse CreateTenantResponse GetUserResponse ErrorReason User; do
    expect "java/dev/latchkey/v1/$class.java" "package dev.latchkey.v1;"
done
expect csharp/Auth.cs "namespace Latchkey.V1"
expect objc/latchkey/v1/Auth.pbobjc.h "@interface LTKUser"
expect php/Latchkey/V1/User.php "namespace Latchkey\\V1;"
expect ruby/latchkey/v1/auth_pb.rb "  module V1"

if command -v protoc-gen-go > /dev/null && command -v protoc-gen-go-grpc > /dev/null; then
    mkdir "$out/go"
    protoc -I proto "--go_out=$out/go" "--go-grpc_out=$out/go" "${files[@]}"
    # Only the header line naming protoc's version differs from buf's output.
    diff -r -I '^//[[:space:]]*protoc[[:space:]]' clients/go/latchkeyv1 \
        "$out/go/github.com/latchkey/latchkey/clients/go/latchkeyv1" ||
        { echo "protoc check: protoc's Go output differs from clients/go/latchkeyv1" >&2; exit 1; }
    echo "protoc check: Go generated, the same as clients/go/latchkeyv1"
fi

jar=/usr/share/java/protobuf.jar
if command -v javac > /dev/null && [ -f "$jar" ]; then
    find "$out/java" -name '*.java' > "$out/sources"
    javac -nowarn -d "$out/classes" -cp "$jar" "@$out/sources"
    echo "protoc check: Java, C#, Objective-C, PHP and Ruby generated; the Java compiles ($(protoc --version))"
else
    echo "protoc check: Java, C#, Objective-C, PHP and Ruby generated; javac or $jar missing: Java not compiled"
fi
