//go:build linux

package supervisor

import (
	"os"
	"testing"

	"github.com/rpwrap/rpwrap/internal/testutil"
)

func TestMain(m *testing.M) { os.Exit(testutil.VerifyNoLeaks(m)) }
