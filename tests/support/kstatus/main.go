// kstatus-check: kstatus's verdict (sigs.k8s.io/cli-utils/pkg/kstatus/status.Compute, the library
// Flux, kpt and cli-utils judge resources with) on objects read from stdin.
//
// Input: a JSON array of objects. Output: a JSON array, one {"status", "message"} per object, in order
// (or {"error"} where Compute refused the object).
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type verdict struct {
	Status  string `json:"status,omitempty"`
	Message string `json:"message,omitempty"`
	Error   string `json:"error,omitempty"`
}

func main() {
	var objects []json.RawMessage
	if err := json.NewDecoder(os.Stdin).Decode(&objects); err != nil {
		fmt.Fprintf(os.Stderr, "kstatus-check: reading a JSON array of objects from stdin: %v\n", err)
		os.Exit(2)
	}
	out := make([]verdict, 0, len(objects))
	for _, raw := range objects {
		// Unstructured's own decoding: integers stay int64, as the apiserver's client gives them.
		object := &unstructured.Unstructured{}
		if err := object.UnmarshalJSON(raw); err != nil {
			out = append(out, verdict{Error: err.Error()})
			continue
		}
		result, err := status.Compute(object)
		if err != nil {
			out = append(out, verdict{Error: err.Error()})
			continue
		}
		out = append(out, verdict{Status: result.Status.String(), Message: result.Message})
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintf(os.Stderr, "kstatus-check: %v\n", err)
		os.Exit(2)
	}
}
