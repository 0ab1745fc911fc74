package strictjson_test

import (
	"strings"
	"testing"

	"github.com/agentca/agentca/provisioners/internal/strictjson"
)

type opts struct {
	Audience string   `json:"audience"`
	Regions  []string `json:"regions"`
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name, in, what, wantErr string
	}{
		{"ok", `{"audience": "a", "regions": ["x"]}`, "", ""},
		{"empty is {}", ``, "", ""},
		{"not an object", `[1]`, "token", "token: want a JSON object"},
		{"unknown field", `{"audiences": "a"}`, "", `"audiences": unknown field`},
		{"case-insensitive match", `{"Audience": "a"}`, "options", `options: "Audience": unknown field`},
		{"given twice", `{"audience": "a", "audience": "b"}`, "", "audience: given twice"},
		{"wrong type", `{"audience": 1}`, "token", "token: audience: want string"},
		{"trailing data", `{"audience": "a"} {}`, "", "options: data after the object"},
		{"truncated", `{"audience": "a"`, "token", "token:"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var o opts
			err := strictjson.Decode([]byte(tc.in), &o, tc.what)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("err = %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestEach(t *testing.T) {
	digits := func(s string) bool { return s != "" && strings.Trim(s, "0123456789") == "" }
	if err := strictjson.Each("accounts", []string{"1", "22"}, digits, "a number"); err != nil {
		t.Fatal(err)
	}
	err := strictjson.Each("accounts", []string{"1", "x2", "y"}, digits, "a number")
	if err == nil || err.Error() != `accounts[1]: "x2" is not a number` {
		t.Fatalf("Each = %v", err)
	}
}
