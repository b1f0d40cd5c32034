"""The model server of the dream step and its thin client.

`dreamflow dream-frame` runs once per frame; importing torch and loading a model cost far more than
dreaming a small frame. So the client (serving.client, standard library only) hands each FrameJob
over a Unix socket to a model server (serving.server) that keeps torch and the models loaded, one
per node and working directory (serving.paths names its socket; serving.protocol is the wire
format). Results never depend on the server, only speed does: without one, the job is dreamed
in-process.

Environment variables:
  DREAMFLOW_SERVER       off (also 0, false, no) always dreams in-process; anything else, or unset,
                         uses the server.
  DREAMFLOW_SERVER_DIR   directory of the sockets, lock files, pid files and server logs; default
                         $XDG_RUNTIME_DIR/dreamflow when XDG_RUNTIME_DIR is set, else
                         /tmp/dreamflow-<uid>. It must be node-local (a Unix socket on a shared file
                         system does not reach other nodes) and is created with mode 0700. It
                         must be a real directory (not a symbolic link) of this user with mode
                         0700, else it is refused with what to do; a server answers only
                         processes of its own user. Servers remove the files of servers gone
                         (their logs after 7 days). Containers bind-mount it.
  DREAMFLOW_SERVER_ROOTS absolute directories (separated by ':') whose files jobs may have the
                         server read and write besides those of its working directory; the
                         workflow sets it for a work_dir or results_dir outside itself.
  DREAMFLOW_SERVER_IDLE  seconds a server stays up without requests before it exits (default 10);
                         given to the server when a client starts one.
  DREAMFLOW_PER_RULE_CONTAINER
                         set by the workflow when each job runs in a container of its own: the
                         client uses a running server but never starts one (see client).
"""
