// Package ok has its doc.
package ok
