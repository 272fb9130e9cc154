package configs

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"github.com/caarlos0/env/v11"
	"github.com/spf13/pflag"
)

// EnvPrefix is the prefix of every environment variable dsgate reads.
const EnvPrefix = "GATEWAY_"

// Overrides holds one command-line flag per Model field (--max-batch-size for
// max_batch_size). Register it on a subcommand's flag set, parse, then Apply.
type Overrides struct {
	fs     *pflag.FlagSet
	values map[string]*string // flag name -> raw value
}

// FlagName is the command-line spelling of a JSON field name.
func FlagName(jsonField string) string { return strings.ReplaceAll(jsonField, "_", "-") }

// RegisterOverrides adds a string flag for every field of Model to fs.
func RegisterOverrides(fs *pflag.FlagSet) *Overrides {
	o := &Overrides{fs: fs, values: map[string]*string{}}
	t := reflect.TypeOf(Model{})
	for i := 0; i < t.NumField(); i++ {
		name := FlagName(jsonName(t.Field(i)))
		o.values[name] = fs.String(name, "", "override the model config field "+jsonName(t.Field(i)))
	}
	return o
}

// Apply layers the environment and then the flags that were set on top of m.
func (o *Overrides) Apply(m *Model, environ map[string]string) error {
	if err := ApplyEnv(m, environ); err != nil {
		return err
	}
	t := reflect.TypeOf(*m)
	v := reflect.ValueOf(m).Elem()
	for i := 0; i < t.NumField(); i++ {
		name := FlagName(jsonName(t.Field(i)))
		if !o.fs.Changed(name) {
			continue
		}
		if err := setField(v.Field(i), *o.values[name]); err != nil {
			return fmt.Errorf("--%s: %w", name, err)
		}
	}
	return nil
}

// ApplyEnv overrides fields of m from GATEWAY_* variables in environ (e.g.
// GATEWAY_MAX_BATCH_SIZE). Unset variables leave the field alone.
func ApplyEnv(m *Model, environ map[string]string) error {
	if err := env.ParseWithOptions(m, env.Options{Prefix: EnvPrefix, Environment: environ}); err != nil {
		return fmt.Errorf("model config from environment: %w", err)
	}
	return nil
}

// Set assigns one field by its JSON name from text, as a flag would.
func (m *Model) Set(jsonField, value string) error {
	t := reflect.TypeOf(*m)
	v := reflect.ValueOf(m).Elem()
	for i := 0; i < t.NumField(); i++ {
		if jsonName(t.Field(i)) == jsonField {
			return setField(v.Field(i), value)
		}
	}
	return fmt.Errorf("unknown config field %q (valid fields: %s)", jsonField, strings.Join(FieldNames(), ", "))
}

func setField(f reflect.Value, s string) error {
	switch f.Kind() {
	case reflect.Int:
		n, err := strconv.Atoi(s)
		if err != nil {
			return fmt.Errorf("want an integer, got %q", s)
		}
		f.SetInt(int64(n))
	case reflect.Float64:
		x, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return fmt.Errorf("want a number, got %q", s)
		}
		f.SetFloat(x)
	case reflect.String:
		f.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("want true or false, got %q", s)
		}
		f.SetBool(b)
	case reflect.Pointer:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("want true or false, got %q", s)
		}
		f.Set(reflect.ValueOf(&b))
	default:
		return fmt.Errorf("unsupported field kind %s", f.Kind())
	}
	return nil
}
