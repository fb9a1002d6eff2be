// Command validate decodes Kubernetes manifests strictly into the API's own
// Go types (k8s.io/api): an unknown or misspelt field, a value of the wrong
// type or a kind it does not know is an error. It prints each object as the
// API types encode it, one JSON document a line, for the checks that follow.
//
//	go run . ../web.yaml
//
// It is a module of its own, so that rpwrap's module does not depend on
// k8s.io/api; examples/kubernetes's test runs it.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: validate FILE.yaml...")
		os.Exit(2)
	}
	failed := false
	for _, path := range os.Args[1:] {
		if err := validateFile(path); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
			failed = true
		}
	}
	if failed {
		os.Exit(1)
	}
}

// validateFile checks every document of the file at path.
func validateFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	for i, doc := range splitDocuments(b) {
		obj, err := decode(doc)
		if err != nil {
			return fmt.Errorf("document %d: %w", i+1, err)
		}
		out, err := json.Marshal(obj)
		if err != nil {
			return fmt.Errorf("document %d: %w", i+1, err)
		}
		fmt.Printf("%s\n", out)
	}
	return nil
}

// splitDocuments splits a YAML stream at its "---" lines, dropping empty
// documents.
func splitDocuments(b []byte) [][]byte {
	var docs [][]byte
	for _, d := range bytes.Split(append([]byte("\n"), b...), []byte("\n---")) {
		if strings.TrimSpace(stripComments(string(d))) != "" {
			docs = append(docs, d)
		}
	}
	return docs
}

func stripComments(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// decode reads one document into the type its apiVersion and kind name.
func decode(doc []byte) (any, error) {
	var meta struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal(doc, &meta); err != nil {
		return nil, err
	}
	var obj any
	switch meta.APIVersion + " " + meta.Kind {
	case "apps/v1 Deployment":
		obj = &appsv1.Deployment{}
	case "v1 ConfigMap":
		obj = &corev1.ConfigMap{}
	case "v1 Service":
		obj = &corev1.Service{}
	default:
		return nil, fmt.Errorf("kind %q of apiVersion %q: not one this check knows", meta.Kind, meta.APIVersion)
	}
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return nil, fmt.Errorf("%s: %w", meta.Kind, err)
	}
	return obj, nil
}
