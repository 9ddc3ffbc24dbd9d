package app

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/dispatch-engine/dispatch-engine/client"
)

// Templates (docs/TEMPLATES.md): Liquid templates per locale that
// notifications render their content from at acceptance.

func (a *cli) templatesCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "templates",
		Aliases: []string{"template"},
		Short:   "Put, get, list, delete and preview notification templates",
		Long: `Templates (/v1/templates): a channel, Liquid parts per locale (email subject,
text and html; sms text; push title and text) and a default locale. Each put
stores a new version; a notification naming the template renders its current
one at acceptance. render previews it with data, as a notification would.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(a.templatesPutCommand(), a.templatesGetCommand(), a.templatesListCommand(),
		a.templatesDeleteCommand(), a.templatesRenderCommand())
	return cmd
}

func (a *cli) templatesPutCommand() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "put NAME --file FILE",
		Short: "Store a new version of a template",
		Long: `Store the template as its next version (PUT /v1/templates/{name}), read as JSON
from --file ('-' reads stdin): {"channel":"email","defaultLocale":"en",
"locales":{"en":{"subject":"…","text":"…","html":"…"},"tr":{…}}}. A part that
does not parse is refused, naming locales.<locale>.<part>.`,
		Example: `  dispatchctl templates put welcome --file welcome.json`,
		Args:    exactArgs("NAME"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			if file == "" {
				return usageErrorf("give the template with --file FILE ('-' reads stdin)")
			}
			raw, err := a.readInput(file)
			if err != nil {
				return err
			}
			var body client.TemplateInput
			dec := json.NewDecoder(bytes.NewReader(raw))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&body); err != nil {
				return usageErrorf("%s: not a template: %v", file, err)
			}
			t, _, err := call(cmd.Context(), func(ctx context.Context) (*client.Template, error) {
				return a.api.PutTemplate(ctx, args[0], body)
			})
			if err != nil {
				return err
			}
			return a.output(t, func(w io.Writer) { printTemplate(w, t) })
		}),
	}
	cmd.Flags().StringVar(&file, "file", "", "the template as JSON ('-' reads stdin)")
	return cmd
}

func (a *cli) templatesGetCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "get NAME",
		Short: "Print a template's current version and its versions",
		Args:  exactArgs("NAME"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			t, _, err := call(cmd.Context(), func(ctx context.Context) (*client.Template, error) {
				return a.api.GetTemplate(ctx, args[0])
			})
			if err != nil {
				return err
			}
			return a.output(t, func(w io.Writer) { printTemplate(w, t) })
		}),
	}
}

// printTemplate writes a template's fields, then each locale's parts.
func printTemplate(w io.Writer, t *client.Template) {
	k := newKV(w)
	k.add("name", t.Name)
	k.add("version", strconv.Itoa(t.Version))
	k.add("channel", string(t.Channel))
	k.add("default locale", t.DefaultLocale)
	k.add("created", stamp(t.CreatedAt))
	k.add("updated", stamp(t.UpdatedAt))
	if len(t.Versions) > 0 {
		vs := make([]string, len(t.Versions))
		for i, v := range t.Versions {
			vs[i] = strconv.Itoa(v.Version) + " (" + stamp(v.CreatedAt) + ")"
		}
		k.add("versions", strings.Join(vs, ", "))
	}
	locales := make([]string, 0, len(t.Locales))
	for l := range t.Locales {
		locales = append(locales, l)
	}
	sort.Strings(locales)
	for _, l := range locales {
		p := t.Locales[l]
		k.add(l+".subject", str(p.Subject))
		k.add(l+".title", str(p.Title))
		k.add(l+".text", str(p.Text))
		k.add(l+".html", str(p.HTML))
	}
}

func (a *cli) templatesListCommand() *cobra.Command {
	var pf pageFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List templates, by name",
		Args:  exactArgs(),
		RunE: a.run(func(cmd *cobra.Command, _ []string) error {
			p := &client.ListTemplatesParams{Limit: pf.limitPtr(cmd), Cursor: pf.cursorPtr()}
			page, _, err := call(cmd.Context(), func(ctx context.Context) (*client.TemplatePage, error) {
				return a.api.ListTemplates(ctx, p)
			})
			if err != nil {
				return err
			}
			return a.output(page, func(w io.Writer) {
				say(w, "%-32s  %-7s  %-5s  %-8s  %s\n", "NAME", "VERSION", "CHAN", "DEFAULT", "LOCALES")
				for _, t := range page.Data {
					locales := make([]string, 0, len(t.Locales))
					for l := range t.Locales {
						locales = append(locales, l)
					}
					sort.Strings(locales)
					say(w, "%-32s  %-7d  %-5s  %-8s  %s\n", t.Name, t.Version, t.Channel, t.DefaultLocale, strings.Join(locales, ","))
				}
				a.printNext(page.NextCursor)
			})
		}),
	}
	pf.register(cmd.Flags())
	return cmd
}

func (a *cli) templatesDeleteCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a template with all its versions",
		Args:  exactArgs("NAME"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			_, _, err := call(cmd.Context(), func(ctx context.Context) (struct{}, error) {
				return struct{}{}, a.api.DeleteTemplate(ctx, args[0])
			})
			if err != nil {
				return err
			}
			return a.output(map[string]string{"deleted": args[0]}, func(w io.Writer) { say(w, "deleted template %s\n", args[0]) })
		}),
	}
}

func (a *cli) templatesRenderCommand() *cobra.Command {
	var data, locale string
	cmd := &cobra.Command{
		Use:   "render NAME [--data JSON] [--locale TAG]",
		Short: "Preview a template rendered with data",
		Long: `Render the template's current version (POST /v1/templates/{name}/render) with
--data (a JSON object; '@FILE' reads a file, '@-' stdin) in --locale (falling
back to its language, then the template's default), as a notification would
be at acceptance. Nothing is stored or sent.`,
		Example: `  dispatchctl templates render welcome --data '{"name":"Ada"}' --locale tr-TR`,
		Args:    exactArgs("NAME"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			var in client.RenderInput
			if data != "" {
				raw := []byte(data)
				if name, ok := strings.CutPrefix(data, "@"); ok {
					var err error
					if raw, err = a.readInput(name); err != nil {
						return err
					}
				}
				if err := json.Unmarshal(raw, &in.Data); err != nil || in.Data == nil {
					return usageErrorf("--data: a JSON object is expected")
				}
			}
			if locale != "" {
				in.Locale = &locale
			}
			r, _, err := call(cmd.Context(), func(ctx context.Context) (*client.RenderedTemplate, error) {
				return a.api.RenderTemplate(ctx, args[0], in)
			})
			if err != nil {
				return err
			}
			return a.output(r, func(w io.Writer) {
				k := newKV(w)
				k.add("template", r.Template)
				k.add("version", strconv.Itoa(r.Version))
				k.add("locale", r.Locale)
				k.add("subject", str(r.Subject))
				k.add("title", str(r.Title))
				k.add("text", r.Text)
				k.add("html", str(r.HTML))
			})
		}),
	}
	cmd.Flags().StringVar(&data, "data", "", "the template's variables as a JSON object ('@FILE' reads a file, '@-' stdin)")
	cmd.Flags().StringVar(&locale, "locale", "", "the locale wanted, a BCP 47 tag (e.g. tr-TR)")
	return cmd
}
