"""`gpreempt-trace doctor`: what this machine lets the recorder and the controller do, and why not."""
