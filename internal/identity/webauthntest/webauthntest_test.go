package webauthntest

import (
	"encoding/hex"
	"strings"
	"testing"
)

// EncodeCBOR against RFC 8949 Appendix A, and the CTAP2 canonical map
// order (shorter keys first, then bytewise) authenticators use.
func TestEncodeCBOR(t *testing.T) {
	for _, tc := range []struct {
		v    any
		want string
	}{
		{0, "00"}, {23, "17"}, {24, "1818"}, {100, "1864"}, {1000, "1903e8"}, {1000000, "1a000f4240"},
		{-1, "20"}, {-10, "29"}, {-100, "3863"}, {-1000, "3903e7"},
		{"", "60"}, {"a", "6161"}, {"IETF", "6449455446"}, {[]byte{}, "40"}, {[]byte{1, 2, 3, 4}, "4401020304"},
		{[]any{}, "80"}, {[]any{1, 2, 3}, "83010203"},
		{map[any]any{}, "a0"}, {map[any]any{1: 2, 3: 4}, "a201020304"},
		// COSE key order: 1, 3, -1, -2, -3.
		{map[any]any{-3: 5, -1: 1, 3: -7, 1: 2, -2: 4}, "a501020326200121042205"},
		{map[any]any{"fmt": "none", "attStmt": map[any]any{}, "authData": []byte{}}, "a363666d74646e6f6e656761747453746d74a068617574684461746140"},
	} {
		clean := strings.ReplaceAll(tc.want, " ", "")
		if got := hex.EncodeToString(EncodeCBOR(tc.v)); got != clean {
			t.Errorf("EncodeCBOR(%v) = %s, want %s", tc.v, got, clean)
		}
	}
}
