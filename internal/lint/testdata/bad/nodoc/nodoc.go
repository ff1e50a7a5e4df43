package nodoc

// Duration uses time only as a type: that is allowed.
import "time"

var D = time.Second
