package registry

import (
	"database/sql"
	"errors"
)

// errStopRows, returned by an eachRow callback, ends the iteration without an error.
var errStopRows = errors.New("stop")

// eachRow returns a function that calls fn for each row of a query's result (rows, err as
// QueryContext returned them, so that eachRow(db.QueryContext(…))(fn) reads as one call) and
// closes rows. It returns the query's, fn's or the iteration's first error.
func eachRow(rows *sql.Rows, err error) func(fn func(*sql.Rows) error) error {
	return func(fn func(*sql.Rows) error) error {
		if err != nil {
			return err
		}
		for rows.Next() {
			if err := fn(rows); err != nil {
				rows.Close()
				if errors.Is(err, errStopRows) {
					return nil
				}
				return err
			}
		}
		return rows.Close()
	}
}
