package nodoc

// X is documented, the package is not.
var X = 1
