package app

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/dispatch-engine/dispatch-engine/client"
)

// maxBatch is the most notifications one POST /v1/notifications/batch takes.
const maxBatch = 1000

// batchItem is one notification of a batch file, and where it came from.
type batchItem struct {
	n    client.CreateNotification
	line int // its line in a CSV file; 0 for JSON
}

// csvColumns are the columns a CSV batch file may have; channel, to and
// content are required. "recipient" is taken for "to".
var csvColumns = []string{"channel", "to", "content", "subject", "priority"}

// parseBatchFile reads a batch file: JSON (an array of notifications as
// POST /v1/notifications takes them, or {"notifications": [...]}) when its
// first non-blank character is '[' or '{', and CSV with a header row
// otherwise.
func parseBatchFile(raw []byte) ([]batchItem, error) {
	raw = bytes.TrimPrefix(raw, []byte("\xef\xbb\xbf")) // a UTF-8 byte order mark, as spreadsheets write
	trimmed := bytes.TrimLeft(raw, " \t\r\n")
	var (
		items []batchItem
		err   error
	)
	if len(trimmed) > 0 && (trimmed[0] == '[' || trimmed[0] == '{') {
		items, err = parseBatchJSON(trimmed)
	} else {
		items, err = parseBatchCSV(raw)
	}
	if err != nil {
		return nil, err
	}
	if len(items) == 0 {
		return nil, errors.New("no notifications in it")
	}
	return items, nil
}

func parseBatchJSON(raw []byte) ([]batchItem, error) {
	var list []json.RawMessage
	if raw[0] == '{' {
		var doc struct {
			Notifications []json.RawMessage `json:"notifications"`
		}
		if err := strictJSON(raw, &doc); err != nil {
			return nil, fmt.Errorf("not a JSON {\"notifications\": [...]} document: %w", err)
		}
		list = doc.Notifications
	} else if err := strictJSON(raw, &list); err != nil {
		return nil, fmt.Errorf("not a JSON array of notifications: %w", err)
	}
	items := make([]batchItem, len(list))
	for i, r := range list {
		if err := strictJSON(r, &items[i].n); err != nil {
			return nil, fmt.Errorf("notifications[%d]: %w", i, err)
		}
	}
	return items, nil
}

// strictJSON decodes one JSON value into v, refusing unknown fields (as
// the API does) and anything after it.
func strictJSON(raw []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("more than one JSON value")
	}
	return nil
}

func parseBatchCSV(raw []byte) ([]batchItem, error) {
	r := csv.NewReader(bytes.NewReader(raw))
	r.FieldsPerRecord = -1 // checked here, with a clearer message
	header, err := r.Read()
	if errors.Is(err, io.EOF) {
		return nil, errors.New("empty file")
	}
	if err != nil {
		return nil, fmt.Errorf("CSV: %w", err)
	}
	col := map[string]int{}
	for i, h := range header {
		name := strings.ToLower(strings.TrimSpace(h))
		if name == "recipient" {
			name = "to"
		}
		known := false
		for _, c := range csvColumns {
			known = known || c == name
		}
		if !known {
			return nil, fmt.Errorf("CSV header: unknown column %q (the columns are %s)", h, strings.Join(csvColumns, ","))
		}
		if _, dup := col[name]; dup {
			return nil, fmt.Errorf("CSV header: column %q twice", name)
		}
		col[name] = i
	}
	for _, c := range []string{"channel", "to", "content"} {
		if _, ok := col[c]; !ok {
			return nil, fmt.Errorf("CSV header: no %q column (the header row names the columns: %s)", c, strings.Join(csvColumns, ","))
		}
	}
	var items []batchItem
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			return items, nil
		}
		if err != nil {
			return nil, fmt.Errorf("CSV: %w", err)
		}
		line, _ := r.FieldPos(0)
		if len(rec) == 1 && strings.TrimSpace(rec[0]) == "" {
			continue // a blank line
		}
		if len(rec) != len(header) {
			return nil, fmt.Errorf("CSV line %d: %d fields, the header has %d", line, len(rec), len(header))
		}
		get := func(name string) string {
			if i, ok := col[name]; ok {
				return rec[i]
			}
			return ""
		}
		n := client.CreateNotification{
			Channel:   client.Channel(strings.ToLower(strings.TrimSpace(get("channel")))),
			Recipient: strings.TrimSpace(get("to")),
			Content:   get("content"),
		}
		if s := get("subject"); s != "" {
			n.Subject = &s
		}
		if p := strings.ToUpper(strings.TrimSpace(get("priority"))); p != "" {
			pr := client.Priority(p)
			n.Priority = &pr
		}
		items = append(items, batchItem{n: n, line: line})
	}
}

// chunks cuts items into runs of at most size.
func chunks[T any](items []T, size int) [][]T {
	var out [][]T
	for len(items) > size {
		out = append(out, items[:size:size])
		items = items[size:]
	}
	if len(items) > 0 {
		out = append(out, items)
	}
	return out
}
