"""The command line, by command group: each module holds its commands' parsers and handlers (argument handling;
the work lives in the packages). `tagtrack.main` builds the parser from them and dispatches.

common.py          what several commands share: model/engine/settings arguments, settings layers, exit codes
run_commands.py    predict, run, demo, view, export
train_commands.py  train, label, import-lsp, import-teacher, teacher-maps
eval_commands.py   eval, eval-track
bench_commands.py  bench decode, track, run, train, teacher
"""
