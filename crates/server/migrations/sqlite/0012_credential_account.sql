-- The account at the provider a credential acts as (`octocat`, `ana@example.com`), as the
-- connecting device found it (docs/api.md, "Credentials"); NULL when unknown. Display only: the
-- proxy never reads it. The broker checks what it accepts (1 to 200 characters, no control or
-- bidirectional-override characters, no surrounding spaces); the column checks the length.
ALTER TABLE credentials ADD COLUMN account TEXT CHECK (account IS NULL OR length(account) BETWEEN 1 AND 200);
