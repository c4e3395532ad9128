// Command argocd-health runs the test cases of Argo CD health checks with Argo CD's own Lua
// runtime (github.com/argoproj/argo-cd/v3/util/lua), the code Argo CD runs for a
// `resource.customizations.health.<group>_<kind>` script from argocd-cm.
//
// Usage: argocd-health DIR...
//
// Each DIR holds health.lua and health_test.yaml in Argo CD's resource_customizations
// layout: `tests: [{inputPath: testdata/x.yaml, healthStatus: {status, message}}]`. Every
// case prints one line (PASS or FAIL with what differs); the exit status is 1 when any case
// fails or a file is missing or malformed.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/argoproj/argo-cd/v3/util/lua"
	"github.com/argoproj/gitops-engine/pkg/health"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// The shape of Argo CD's health_test.yaml (as in util/lua/health_test.go).
type testFile struct {
	Tests []struct {
		InputPath    string              `json:"inputPath"`
		HealthStatus health.HealthStatus `json:"healthStatus"`
	} `json:"tests"`
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: argocd-health DIR...")
		os.Exit(2)
	}
	failed, passed := 0, 0
	for _, dir := range os.Args[1:] {
		p, f, err := runDir(dir)
		passed += p
		failed += f
		if err != nil {
			fmt.Printf("FAIL %s: %v\n", dir, err)
			failed++
		}
	}
	fmt.Printf("%d passed, %d failed\n", passed, failed)
	if failed > 0 || passed == 0 {
		os.Exit(1)
	}
}

func runDir(dir string) (passed, failed int, err error) {
	script, err := os.ReadFile(filepath.Join(dir, "health.lua"))
	if err != nil {
		return 0, 0, err
	}
	raw, err := os.ReadFile(filepath.Join(dir, "health_test.yaml"))
	if err != nil {
		return 0, 0, err
	}
	var tests testFile
	if err := yaml.UnmarshalStrict(raw, &tests); err != nil {
		return 0, 0, fmt.Errorf("health_test.yaml: %w", err)
	}
	if len(tests.Tests) == 0 {
		return 0, 0, fmt.Errorf("health_test.yaml has no tests")
	}
	// Argo CD runs argocd-cm health scripts without Lua's open libraries unless the
	// customization sets useOpenLibs; the script must work without them.
	vm := lua.VM{UseOpenLibs: false}
	for _, test := range tests.Tests {
		name := filepath.Join(dir, test.InputPath)
		got, err := evaluate(vm, name, string(script))
		switch {
		case err != nil:
			fmt.Printf("FAIL %s: %v\n", name, err)
			failed++
		case got.Status != test.HealthStatus.Status || got.Message != test.HealthStatus.Message:
			fmt.Printf("FAIL %s: got %s %q, want %s %q\n", name,
				got.Status, got.Message, test.HealthStatus.Status, test.HealthStatus.Message)
			failed++
		default:
			fmt.Printf("PASS %s: %s %q\n", name, got.Status, got.Message)
			passed++
		}
	}
	return passed, failed, nil
}

func evaluate(vm lua.VM, path, script string) (*health.HealthStatus, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	obj := map[string]any{}
	if err := yaml.Unmarshal(raw, &obj); err != nil {
		return nil, err
	}
	return vm.ExecuteHealthLua(&unstructured.Unstructured{Object: obj}, script)
}
