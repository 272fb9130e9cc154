package api

import (
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"regexp"

	"github.com/labstack/echo/v4"
)

// defaultModuleLimit is the upload limit when no extension host says otherwise.
const defaultModuleLimit = 16 << 20

var extensionName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

func (s *Server) moduleLimit() int64 {
	if s.cfg.Extensions != nil && s.cfg.Extensions.MaxModuleBytes() > 0 {
		return s.cfg.Extensions.MaxModuleBytes()
	}
	return defaultModuleLimit
}

func (s *Server) extensions() (Extensions, error) {
	if s.cfg.Extensions == nil {
		return nil, fmt.Errorf("%w: extensions are not enabled on this server", ErrExtensionNotFound)
	}
	return s.cfg.Extensions, nil
}

// uploadExtension is POST /v1/extensions (admin; multipart name, kind, module).
func (s *Server) uploadExtension(c echo.Context) error {
	host, err := s.extensions()
	if err != nil {
		return err
	}
	limit := s.moduleLimit()
	form, err := c.Request().MultipartReader()
	if err != nil {
		return invalid("", "send multipart/form-data with fields name, kind and module: %v", err)
	}
	var name, kind string
	var module []byte
	haveModule := false
	for {
		part, err := form.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return fmt.Errorf("%w: upload larger than %d bytes", ErrModuleTooLarge, limit)
			}
			return invalid("", "malformed multipart body: %v", err)
		}
		switch part.FormName() {
		case "name":
			name, err = readField(part, 256)
		case "kind":
			kind, err = readField(part, 64)
		case "module":
			module, err = io.ReadAll(io.LimitReader(part, limit+1))
			haveModule = true
			if err == nil && int64(len(module)) > limit {
				return fmt.Errorf("%w: module larger than %d bytes", ErrModuleTooLarge, limit)
			}
		}
		_ = part.Close()
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return fmt.Errorf("%w: upload larger than %d bytes", ErrModuleTooLarge, limit)
			}
			return invalid(part.FormName(), "reading field %q: %v", part.FormName(), err)
		}
	}
	if !extensionName.MatchString(name) {
		return invalid("name", "name must match %s", extensionName)
	}
	if kind != "template" && kind != "sampler" {
		return invalid("kind", "kind must be template or sampler, got %q", kind)
	}
	if !haveModule || len(module) == 0 {
		return invalid("module", "module (the .wasm file) is required")
	}
	info, err := host.Add(c.Request().Context(), name, kind, module)
	if err != nil {
		return fmt.Errorf("upload extension %q: %w", name, err)
	}
	return c.JSON(http.StatusCreated, info)
}

func readField(p *multipart.Part, max int64) (string, error) {
	b, err := io.ReadAll(io.LimitReader(p, max+1))
	if err != nil {
		return "", err
	}
	if int64(len(b)) > max {
		return "", fmt.Errorf("longer than %d bytes", max)
	}
	return string(b), nil
}

// listExtensions is GET /v1/extensions.
func (s *Server) listExtensions(c echo.Context) error {
	data := []ExtensionInfo{}
	if s.cfg.Extensions != nil {
		data = append(data, s.cfg.Extensions.List()...)
	}
	return c.JSON(http.StatusOK, map[string]any{"object": "list", "data": data})
}

// getExtension is GET /v1/extensions/:name.
func (s *Server) getExtension(c echo.Context) error {
	host, err := s.extensions()
	if err != nil {
		return err
	}
	info, ok := host.Get(c.Param("name"))
	if !ok {
		return fmt.Errorf("%w: %q", ErrExtensionNotFound, c.Param("name"))
	}
	return c.JSON(http.StatusOK, info)
}

// deleteExtension is DELETE /v1/extensions/:name (admin).
func (s *Server) deleteExtension(c echo.Context) error {
	host, err := s.extensions()
	if err != nil {
		return err
	}
	name := c.Param("name")
	if err := host.Delete(name); err != nil {
		return fmt.Errorf("delete extension %q: %w", name, err)
	}
	return c.JSON(http.StatusOK, map[string]any{"name": name, "object": "extension.deleted", "deleted": true})
}
