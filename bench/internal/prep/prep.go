// Package prep is what the benchmark commands share to get going: a
// working directory and the edgeproxy binary to measure.
package prep

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Dir makes a temporary working directory named for the benchmark; the
// caller removes it.
func Dir(name string) (string, error) { return os.MkdirTemp("", name+"-") }

// Edgeproxy is bin, or, when bin is "", edgeproxy built from this
// checkout into dir.
func Edgeproxy(bin, dir string) (string, error) {
	if bin != "" {
		return bin, nil
	}
	bin = filepath.Join(dir, "edgeproxy")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/edgeproxy").CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/edgeproxy: %v\n%s", err, out)
	}
	return bin, nil
}
