package lab

import (
	"fmt"
	"os"
	"os/exec"
)

// BuildForTest builds the programs a test package drives into a fresh temp dir that any user
// can read (tests run some of them unprivileged). Each build is the argument list after "go",
// e.g. {"build", "-o", DIR/"skeind", "github.com/skeinvpn/skein/cmd/skeind"}, where the output
// paths are made with out(dir, name). On error the dir is removed.
func BuildForTest(prefix string, builds func(dir string) [][]string) (string, error) {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", err
	}
	os.Chmod(dir, 0o755)
	for _, b := range builds(dir) {
		cmd := exec.Command("go", b...)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			os.RemoveAll(dir)
			return "", fmt.Errorf("go %v: %w", b, err)
		}
	}
	return dir, nil
}
