-- Resources named like a pool's that belong to another deployment (or to none): the lease holder
-- records what its last listing showed, so every replica's dashboard and metrics can report them.
ALTER TABLE pools ADD COLUMN foreign_resources jsonb NOT NULL DEFAULT '[]'::jsonb;
