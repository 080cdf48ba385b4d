-- The newest event of one symbol and detector, at any time: what the API's "as of" view asks once per
-- detector (and per drift metric). Without it the (symbol, event_time) index is scanned back until a row
-- of that detector turns up, which for a detector the symbol rarely or never emits is the symbol's
-- whole history (183 ms for one symbol of 86k rows, measured; with it, a few index pages).
CREATE INDEX IF NOT EXISTS guardian_events_symbol_detector_time ON guardian_events (symbol, detector, event_time DESC);
