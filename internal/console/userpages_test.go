package console_test

import (
	"context"
	"fmt"
	"html"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/wardtest"
)

var (
	userLink = regexp.MustCompile(`<a href="/console/users/[^"]+">([^<]+)</a>`)
	nextLink = regexp.MustCompile(`<a href="([^"]+)" rel="next">`)
)

// TestUsersPaging: the users list is read a page at a time through the
// "next" links, riskiest first then by username, each user exactly once,
// also when a user is added between two pages; the page size is bounded
// and a bad page parameter gets the 400 page.
func TestUsersPaging(t *testing.T) {
	backends(t, func(t *testing.T, in *wardtest.Instance) {
		ctx := context.Background()
		now := in.Clock.Now()
		for i := range 11 {
			u := &model.User{ID: fmt.Sprintf("pg-%02d", i), Username: fmt.Sprintf("pg-user-%02d", i), CreatedAt: now, UpdatedAt: now}
			if i%4 == 0 {
				u.RiskLevel = model.RiskHigh
			}
			if err := in.App.Store.CreateUser(ctx, u); err != nil {
				t.Fatal(err)
			}
		}
		op := signIn(t, in, "alice")
		all := func() []string { // the expected order
			us, err := in.App.Store.ListUsers(ctx)
			if err != nil {
				t.Fatal(err)
			}
			slices.SortFunc(us, func(a, b *model.User) int {
				ra, rb := model.RiskRank(a.RiskLevel), model.RiskRank(b.RiskLevel)
				if ra != rb {
					return rb - ra
				}
				return strings.Compare(a.Username, b.Username)
			})
			var names []string
			for _, u := range us {
				names = append(names, u.Username)
			}
			return names
		}
		want := all()
		var got []string
		path := "/console/users?n=4"
		for pages := 0; path != ""; pages++ {
			if pages > 20 {
				t.Fatal("the next links do not end")
			}
			resp, body := op.get(path)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s: %d", path, resp.StatusCode)
			}
			rows := userLink.FindAllStringSubmatch(body, -1)
			if len(rows) > 4 || len(rows) == 0 {
				t.Fatalf("%s: %d rows, want 1 to 4", path, len(rows))
			}
			for _, m := range rows {
				got = append(got, html.UnescapeString(m[1]))
			}
			path = ""
			if m := nextLink.FindStringSubmatch(body); m != nil {
				path = html.UnescapeString(m[1])
			}
			if pages == 0 {
				// A user added between pages, sorting before the
				// cursor, is not shown twice nor does it shift the rest.
				if err := in.App.Store.CreateUser(ctx, &model.User{ID: "pg-aa", Username: "aaa-new", CreatedAt: now, UpdatedAt: now}); err != nil {
					t.Fatal(err)
				}
			}
		}
		want = slices.DeleteFunc(want, func(s string) bool { return s == "aaa-new" })
		if !slices.Equal(got, want) {
			t.Errorf("paged through %v,\nwant %v", got, want)
		}
		// Bounded page size; bad parameters.
		if resp, body := op.get("/console/users?n=100000"); resp.StatusCode != http.StatusOK || !strings.Contains(body, "users, riskiest first") {
			t.Errorf("large n: %d", resp.StatusCode)
		}
		for _, bad := range []string{"n=0", "n=-1", "n=x", "after=nope", "after=critical:x", "after=high:"} {
			if resp, _ := op.get("/console/users?" + bad); resp.StatusCode != http.StatusBadRequest {
				t.Errorf("%s: %d, want 400", bad, resp.StatusCode)
			}
		}
	})
}
