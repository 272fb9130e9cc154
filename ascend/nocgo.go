//go:build !cgo

package ascend

import (
	"errors"

	"github.com/dsgate/dsgate/core/backend"
)

func newGroup(int, Options) ([]backend.Backend, error) {
	return nil, errors.New("ascend: this gateway was built without cgo; the Ascend backend needs cgo (dlopen of CANN)")
}
