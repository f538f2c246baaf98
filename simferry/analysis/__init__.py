"""Reports from run directories: tables, written observations and plots.

Reads what runs recorded (``simferry.records``) and nothing that runs them, so a report
can be rebuilt from copied run directories on any machine.
"""
