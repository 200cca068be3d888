//! The newest rows of a history table, across every value of a key.

/// The newest `limit` rows (`columns`) of `table`, ordered by `created_at` then `id`, newest
/// first, of every value of `key` together: each value's newest through an index that
/// leads with (`key`, `created_at`), then merged. The values are found in the same index,
/// one probe each (a loose index scan), so the statement reads about `limit` rows per value
/// however many rows the table keeps, where one sort of the table read them all. `limit`
/// is SQL: a number or a parameter.
pub(crate) fn newest_of_each(table: &str, key: &str, columns: &str, limit: &str) -> String {
    format!(
        "WITH RECURSIVE seen (key_value) AS (
             (SELECT {key} FROM {table} ORDER BY {key} LIMIT 1)
             UNION ALL
             SELECT (SELECT t.{key} FROM {table} t WHERE t.{key} > k.key_value
                      ORDER BY t.{key} LIMIT 1)
               FROM seen k
              WHERE k.key_value IS NOT NULL
         )
         SELECT newest.*
           FROM seen k
          CROSS JOIN LATERAL (
                SELECT {columns} FROM {table} t
                 WHERE t.{key} = k.key_value
                 ORDER BY t.created_at DESC, t.id DESC
                 LIMIT {limit}) newest
          ORDER BY newest.created_at DESC, newest.id DESC
          LIMIT {limit}"
    )
}
