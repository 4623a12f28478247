package proxy

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestDecodesAreWalked holds the package to its rule (decode.go): client
// and broker bytes reach kmsg's ReadFrom only through decodeRequest and
// decodeResponse, which walk them first. A new ReadFrom elsewhere fails here.
func TestDecodesAreWalked(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	decode := regexp.MustCompile(`\.ReadFrom\(|kmsg\.ReadTags\(`)
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") || f == "decode.go" {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(src), "\n") {
			if decode.MatchString(line) {
				t.Errorf("%s:%d decodes without a walk (use decodeRequest or decodeResponse): %s", f, i+1, strings.TrimSpace(line))
			}
		}
	}
}
