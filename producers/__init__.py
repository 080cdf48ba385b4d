"""The library the trading host imports: non-blocking emit(), disk spool, delivery metrics."""
