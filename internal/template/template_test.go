package template_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/template"
)

func render(t *testing.T, parts template.Parts, data map[string]any) (template.Parts, error) {
	t.Helper()
	return template.New(template.Limits{}).Render(context.Background(), parts, data)
}

func TestRenderFillsEveryPart(t *testing.T) {
	out, err := render(t, template.Parts{
		template.PartSubject: "Welcome, {{ name }}",
		template.PartText:    "Hi {{ name | upcase }}{% if vip %}, our VIP{% endif %}.",
	}, map[string]any{"name": "Ada", "vip": true})
	require.NoError(t, err)
	require.Equal(t, "Welcome, Ada", out[template.PartSubject])
	require.Equal(t, "Hi ADA, our VIP.", out[template.PartText])
}

func TestMissingVariableIsNamed(t *testing.T) {
	for _, part := range []string{template.PartText, template.PartHTML} {
		_, err := render(t, template.Parts{part: "Hi {{ user.name }}"}, map[string]any{"user": map[string]any{}})
		var te *template.Error
		require.ErrorAs(t, err, &te, part)
		require.Equal(t, part, te.Part)
		require.Equal(t, "user.name", te.Variable)
	}
}

func TestHTMLPartEscapesVariablesUnlessRaw(t *testing.T) {
	out, err := render(t, template.Parts{
		template.PartHTML: `<p>{{ name }}</p><p>{{- name | upcase -}}</p>{{ banner | raw }}{% raw %}{{ kept }}{% endraw %}`,
		template.PartText: "{{ name }}",
	}, map[string]any{"name": `<script>alert("x")</script>`, "banner": "<b>sale</b>"})
	require.NoError(t, err)
	require.Equal(t, `<p>&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;</p><p>&lt;SCRIPT&gt;ALERT(&#34;X&#34;)&lt;/SCRIPT&gt;</p><b>sale</b>{{ kept }}`,
		out[template.PartHTML])
	require.Equal(t, `<script>alert("x")</script>`, out[template.PartText], "text parts are not HTML")
}

func TestIncludeIsRefusedAtParse(t *testing.T) {
	err := template.New(template.Limits{}).Check(template.Parts{template.PartText: `{% include "/etc/passwd" %}`})
	var te *template.Error
	require.ErrorAs(t, err, &te)
	require.Equal(t, template.PartText, te.Part)
	require.Contains(t, te.Message, "include")
}

func TestSyntaxErrorNamesThePart(t *testing.T) {
	err := template.New(template.Limits{}).Check(template.Parts{
		template.PartText: "fine", template.PartHTML: "{% if x %}never closed",
	})
	var te *template.Error
	require.ErrorAs(t, err, &te)
	require.Equal(t, template.PartHTML, te.Part)
}

func TestOutputIsBounded(t *testing.T) {
	e := template.New(template.Limits{MaxOutput: 1000})
	_, err := e.Render(context.Background(), template.Parts{
		template.PartText: "{% for i in (1..100000) %}0123456789{% endfor %}",
	}, nil)
	var te *template.Error
	require.ErrorAs(t, err, &te)
	require.Contains(t, te.Message, "exceeds 1000 bytes")
}

func TestRenderIsBoundedInTime(t *testing.T) {
	e := template.New(template.Limits{Timeout: 20 * time.Millisecond, MaxOutput: 1 << 30})
	start := time.Now()
	_, err := e.Render(context.Background(), template.Parts{
		template.PartText: "{% for i in (1..100000000) %}{% for j in (1..10) %}.{% endfor %}{% endfor %}",
	}, nil)
	var te *template.Error
	require.True(t, errors.As(err, &te), "%v", err)
	require.Contains(t, te.Message, "longer than")
	require.Less(t, time.Since(start), 2*time.Second)
}

func TestPickLocaleFallsBackToLanguageThenDefault(t *testing.T) {
	has := func(l string) bool { return l == "en" || l == "tr" }
	require.Equal(t, "tr", template.PickLocale(has, "en", "tr-TR"))
	require.Equal(t, "tr", template.PickLocale(has, "en", "", "tr"))
	require.Equal(t, "en", template.PickLocale(has, "en", "de-DE"))
	require.Equal(t, "en", template.PickLocale(has, "en"))
}

func BenchmarkRender(b *testing.B) {
	e := template.New(template.Limits{})
	parts := template.Parts{
		template.PartSubject: "Welcome to {{ product }}, {{ name }}",
		template.PartText:    "Hi {{ name }},\n{% if vip %}As a VIP you get {{ discount }}% off.{% endif %}\n{% for item in items %}- {{ item }}\n{% endfor %}",
		template.PartHTML:    "<p>Hi {{ name }},</p>{% if vip %}<p>As a VIP you get {{ discount }}% off.</p>{% endif %}<ul>{% for item in items %}<li>{{ item }}</li>{% endfor %}</ul>",
	}
	data := map[string]any{"product": "Dispatch", "name": "Ada <ada@example.com>", "vip": true, "discount": 20,
		"items": []any{"one", "two", "three"}}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		out, err := e.Render(ctx, parts, data)
		if err != nil || !strings.Contains(out[template.PartHTML], "&lt;ada@") {
			b.Fatal(err, out)
		}
	}
}

// A compiled part is shared by every render of its source: concurrent
// renders with different data must not see each other's.
func TestConcurrentRendersShareCompiledParts(t *testing.T) {
	e := template.New(template.Limits{})
	parts := template.Parts{template.PartText: "{% for i in items %}{{ i }}{% endfor %} {{ name }}", template.PartHTML: "<b>{{ name }}</b>"}
	errs := make(chan error, 8)
	for g := range 8 {
		go func() {
			name := strings.Repeat("x", g+1)
			for range 50 {
				out, err := e.Render(context.Background(), parts, map[string]any{"name": name, "items": []any{g}})
				if err == nil && (out[template.PartHTML] != "<b>"+name+"</b>" || !strings.HasSuffix(out[template.PartText], " "+name)) {
					err = errors.New("a render saw another's data: " + out[template.PartText])
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 8 {
		require.NoError(t, <-errs)
	}
}
