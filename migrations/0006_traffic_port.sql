-- traffic.json offers each network's listen port beside its public key
-- (issue 24): the port a peer's samples were last recorded under. NULL for
-- rows from before this column, until that peer's next sample.
ALTER TABLE traffic_peers ADD COLUMN network INTEGER;
