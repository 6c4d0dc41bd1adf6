-- Resources named like this deployment's that carry another owner id (or none): the lease holder
-- records what its last complete listing showed, so every replica's dashboard and metrics can
-- report them (they are never deleted or adopted).
ALTER TABLE deployment ADD COLUMN foreign_resources jsonb NOT NULL DEFAULT '[]'::jsonb;
