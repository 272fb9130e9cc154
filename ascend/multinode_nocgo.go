//go:build !cgo

package ascend

import (
	"errors"

	"github.com/dsgate/dsgate/core/backend"
)

// RootInfoSize is the size of an HCCL root info (HcclRootInfo).
const RootInfoSize = 4108

var errNoCgoMultiNode = errors.New("ascend: this gateway was built without cgo; the Ascend backend needs cgo (dlopen of CANN)")

// NewRootInfo needs cgo (see the cgo build's documentation).
func NewRootInfo(Options) ([]byte, error) { return nil, errNoCgoMultiNode }

// NodeFactory needs cgo (see the cgo build's documentation).
func NodeFactory(Options, []byte, int, int) backend.Factory {
	return func(int) ([]backend.Backend, error) { return nil, errNoCgoMultiNode }
}
