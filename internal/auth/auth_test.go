package auth

import (
	"errors"
	"strings"
	"testing"
)

func TestParseBearer(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		header  string
		want    string
		wantErr string
	}{
		{name: "canonical", header: "Bearer abc.def.ghi", want: "abc.def.ghi"},
		{name: "lower-case scheme", header: "bearer abc.def.ghi", want: "abc.def.ghi"},
		{name: "upper-case scheme", header: "BEARER abc.def.ghi", want: "abc.def.ghi"},
		{name: "extra spaces and all b64token characters", header: "Bearer   abc.def-_~+/==", want: "abc.def-_~+/=="},
		{name: "surrounding spaces", header: "  Bearer abc  ", want: "abc"},
		{name: "empty", header: "", wantErr: "missing bearer token"},
		{name: "blank", header: "   ", wantErr: "missing bearer token"},
		{name: "scheme only", header: "Bearer", wantErr: "missing bearer token"},
		{name: "scheme and space", header: "Bearer ", wantErr: "missing bearer token"},
		{name: "basic scheme", header: "Basic dXNlcjpwYXNz", wantErr: "malformed authorization header"},
		{name: "no space after scheme", header: "Bearerabc", wantErr: "malformed authorization header"},
		{name: "no scheme", header: "abc.def.ghi", wantErr: "malformed authorization header"},
		{name: "two tokens", header: "Bearer abc def", wantErr: "malformed authorization header"},
		{name: "tab in token", header: "Bearer abc\tdef", wantErr: "malformed authorization header"},
		{name: "padding only", header: "Bearer ===", wantErr: "malformed authorization header"},
		{name: "padding inside", header: "Bearer a=b", wantErr: "malformed authorization header"},
		{name: "quoted token", header: `Bearer "abc"`, wantErr: "malformed authorization header"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseBearer(tt.header)
			if tt.wantErr == "" {
				if err != nil || got != tt.want {
					t.Errorf("ParseBearer(%q) = %q, %v; want %q", tt.header, got, err, tt.want)
				}
				return
			}
			if !errors.Is(err, ErrInvalidToken) || !strings.Contains(err.Error(), tt.wantErr) || got != "" {
				t.Errorf("ParseBearer(%q) = %q, %v; want ErrInvalidToken with %q", tt.header, got, err, tt.wantErr)
			}
		})
	}
}

func TestPrincipalHasScope(t *testing.T) {
	t.Parallel()
	p := Principal{Subject: "u", Scopes: []string{"read", "write"}}
	for scope, want := range map[string]bool{"read": true, "write": true, "rea": false, "": false, "admin": false} {
		if got := p.HasScope(scope); got != want {
			t.Errorf("HasScope(%q) = %v, want %v", scope, got, want)
		}
	}
	if (Principal{}).HasScope("read") {
		t.Error("a principal without scopes has scope read")
	}
}
