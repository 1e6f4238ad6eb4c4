-- Who may make a request's Cloud API call (docs/adr/0030-sender-exactly-once.md): the 'sending'
-- write is a claim. It carries a token of the writing group and does not overwrite a row another
-- process holds ('sending', 'in_doubt'); a process calls only for the rows that carry its token.
ALTER TABLE sender.messages ADD COLUMN claim text;
