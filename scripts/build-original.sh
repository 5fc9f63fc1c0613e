#!/usr/bin/env bash
# Builds the original Go tool (github.com/Erix025/codex-runner) into DIR, for the tests and the
# bench that run it beside this one (ORIGINAL_TOOL_DIR=DIR). Its code never enters this
# repository: it is fetched (or read from a local git dir) into a temp dir and built there.
#
#   scripts/build-original.sh DIR            # clones ORIGINAL_REPO (default: the GitHub URL)
#   ORIGINAL_GIT_DIR=/path/to/repo.git scripts/build-original.sh DIR   # a local clone or mirror
#   ORIGINAL_REF=<commit> ...                # another commit than HEAD
#
# It needs Go. The original asks for Go 1.22; with an older Go (Debian 12 has 1.19) its go.mod
# is set to that version and a stand-in replaces Go 1.22's method patterns in ServeMux
# ("GET /v1/exec/{id}") and Request.PathValue, in the temp copy only.
set -euo pipefail

out=${1:?usage: scripts/build-original.sh DIR}
repo=${ORIGINAL_REPO:-https://github.com/Erix025/codex-runner}
ref=${ORIGINAL_REF:-HEAD}
command -v go >/dev/null || { echo "build-original: go not found (apt-get install golang-go)" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src" "$out"
if [ -n "${ORIGINAL_GIT_DIR:-}" ]; then
    git --git-dir="$ORIGINAL_GIT_DIR" archive "$ref" | tar -x -C "$work/src"
else
    git clone --quiet "$repo" "$work/clone"
    git -C "$work/clone" archive "$ref" | tar -x -C "$work/src"
fi
cd "$work/src"

# Go's minor version, e.g. 19 for go1.19.8.
minor=$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
if [ "$minor" -lt 22 ]; then
    sed -i -E "s/^go 1\.[0-9]+(\.[0-9]+)?$/go 1.$minor/" go.mod
    # A stand-in for Go 1.22's ServeMux patterns: "METHOD /path/{name}/..." matched by hand,
    # the {name} values kept in the request's context for pathValue.
    for f in $(grep -rl 'http.NewServeMux()' --include='*.go' internal cmd); do
        pkg=$(sed -n -E 's/^package ([a-z_]+).*/\1/p' "$f" | head -1)
        sed -i -e 's/http\.NewServeMux()/newPatternMux()/' -e 's/r\.PathValue(/pathValue(r, /g' "$f"
        cat > "$(dirname "$f")/zz_pattern_mux.go" <<GO
package $pkg

import (
	"context"
	"net/http"
	"strings"
)

type patternKey struct{}

type patternRoute struct {
	method string
	parts  []string
	h      http.HandlerFunc
}

type patternMux struct{ routes []patternRoute }

func newPatternMux() *patternMux { return &patternMux{} }

func (m *patternMux) HandleFunc(pattern string, h func(http.ResponseWriter, *http.Request)) {
	method, path, _ := strings.Cut(pattern, " ")
	m.routes = append(m.routes, patternRoute{method, strings.Split(path, "/"), h})
}

func (m *patternMux) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	got := strings.Split(r.URL.Path, "/")
	methodWrong := false
	for _, rt := range m.routes {
		vals := map[string]string{}
		ok := len(rt.parts) == len(got) || (rt.parts[len(rt.parts)-1] == "" && len(got) >= len(rt.parts))
		for i := 0; ok && i < len(rt.parts); i++ {
			p := rt.parts[i]
			switch {
			case p == "" && i == len(rt.parts)-1:
			case strings.HasPrefix(p, "{") && strings.HasSuffix(p, "}"):
				vals[p[1:len(p)-1]] = got[i]
			default:
				ok = p == got[i]
			}
		}
		if !ok {
			continue
		}
		if rt.method != r.Method && !(rt.method == "GET" && r.Method == "HEAD") {
			methodWrong = true
			continue
		}
		rt.h(w, r.WithContext(context.WithValue(r.Context(), patternKey{}, vals)))
		return
	}
	if methodWrong {
		http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
		return
	}
	http.NotFound(w, r)
}

func pathValue(r *http.Request, name string) string {
	vals, _ := r.Context().Value(patternKey{}).(map[string]string)
	return vals[name]
}
GO
    done
fi
export GOFLAGS=-mod=mod CGO_ENABLED=0
go build -trimpath -o "$out/" ./cmd/codexd ./cmd/codex-remote
echo "build-original: $(ls "$out" | tr '\n' ' ')in $out" >&2
