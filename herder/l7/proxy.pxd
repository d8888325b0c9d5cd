# Cython declarations for herder/l7/proxy.py (an "augmenting" .pxd: the .py stays plain
# Python and runs as such; when the optional extension is built, these make the per-request
# classes C structs). Keep in step with the attributes set in each class's __init__.

cimport cython

cdef class _Slot
cdef class Backend
cdef class Request
cdef class ClientConnection
cdef class ServerConnection

cdef class _Slot:
    cdef public object name
    cdef public object view
    cdef public object address
    cdef public object cookie
    cdef public object set_cookie
    cdef public bint sticky
    cdef public long maxconn
    cdef public long active
    cdef public list idle
    cdef public long requests

cdef class Backend:
    cdef public object name
    cdef public object settings
    cdef public object mode
    cdef public bint keep_alive
    cdef public double timeout_server
    cdef public object cookie
    cdef public object view
    cdef public bint passive
    cdef public object policy
    cdef public object picker
    cdef public object key_kind
    cdef public bint counts
    cdef public dict slots
    cdef public dict by_cookie
    cdef public bint limited
    cdef public bint insert
    cdef public bint reads_cookies
    cdef public bint nocache
    cdef public object plain_heads
    cdef public list queue
    cdef public long _seq
    cdef public bint retired

    # the per-request methods: direct C calls from the other classes
    @cython.locals(slot=_Slot)
    cpdef pick(self, key, long attempt, avoid=*)
    @cython.locals(slot=_Slot)
    cpdef release_slot(self, name)
    @cython.locals(slot=_Slot)
    cpdef release(self, ServerConnection conn)

cdef class Request:
    cdef public object method
    cdef public object target
    cdef public object version
    cdef public bint keep_alive
    cdef public bint upgrade
    cdef public bint complete
    cdef public bint chunked
    cdef public object content_length
    cdef public object host
    cdef public long attempt
    cdef public _Slot server
    cdef public Backend backend
    cdef public bint client_had_cookie
    cdef public bint sent_head
    cdef public object last_tried
    cdef public bint expect_continue
    cdef public object slot
    cdef public object priority
    cdef public double queued_until
    cdef public bint cacheable
    cdef public long hosts
    cdef public bint keep_alive_token
    cdef public object conn_named
    cdef public object upgrade_hdr
    cdef public object body
    cdef public object cookie_values
    cdef public list headers

cdef class ServerConnection:
    cdef public object proxy
    cdef public Backend backend
    cdef public object endpoint
    cdef public object name
    cdef public object transport
    cdef public ClientConnection client
    cdef public Request req
    cdef public object buf
    cdef public object state
    cdef public object remaining
    cdef public object chunks
    cdef public object chunk_parser
    cdef public bint close_delimited
    cdef public bint server_close
    cdef public bint reused
    cdef public bint got_bytes
    cdef public bint client_close
    cdef public double deadline
    cdef public object capture
    cdef public object capture_entry

    cpdef connection_made(self, transport)
    @cython.locals(req=Request, client=ClientConnection)
    cpdef connection_lost(self, exc)
    @cython.locals(req=Request, backend=Backend)
    cpdef data_received(self, data)
    @cython.locals(backend=Backend)
    cpdef attach(self, ClientConnection client, Request req, bint reused)
    @cython.locals(client=ClientConnection, slot=_Slot)
    cpdef _fast_response(self, data, Py_ssize_t end, rh, Request req, Backend backend)
    @cython.locals(client=ClientConnection, req=Request, backend=Backend, slot=_Slot)
    cpdef on_head_data(self, data)
    @cython.locals(client=ClientConnection, req=Request)
    cpdef finish(self)
    @cython.locals(c=ClientConnection)
    cpdef client_body(self, data)
    cpdef close(self)

cdef class ClientConnection:
    cdef public object proxy
    cdef public object settings
    cdef public object parser
    cdef public list queue
    cdef public object transport
    cdef public object peer
    cdef public Request current
    cdef public Request active
    cdef public ServerConnection upstream
    cdef public long head_size
    cdef public bint closing
    cdef public bint tunnel
    cdef public bint write_paused
    cdef public bint read_paused
    cdef public double deadline
    cdef public long deadline_status
    cdef public bint in_head
    cdef public long head_bytes
    cdef public bint pending
    cdef public bint waiting
    cdef public object held
    cdef public Backend extra_for
    cdef public object extra

    cpdef connection_made(self, transport)
    cpdef connection_lost(self, exc)
    @cython.locals(req=Request)
    cpdef data_received(self, data)
    cpdef on_message_begin(self)
    cpdef on_url(self, url)
    @cython.locals(req=Request)
    cpdef on_header(self, name, value)
    @cython.locals(req=Request)
    cpdef on_headers_complete(self)
    @cython.locals(req=Request)
    cpdef on_message_complete(self)
    @cython.locals(req=Request, backend=Backend, slot=_Slot)
    cpdef start_next(self)
    @cython.locals(backend=Backend, slot=_Slot, conn=ServerConnection)
    cpdef dispatch(self, Request req)
    cpdef _release(self, Request req)
    cpdef extra_request_headers(self, Request req, Backend backend)
    cpdef response_done(self, Request req, bint close)
    cpdef close(self)
