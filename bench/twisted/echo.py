"""Twisted echo server for the torsion benchmarks: ``echo.py --port N [--reactor epoll|poll|select]``.

Listens on 127.0.0.1 only. Run by bench/run.sh from the virtualenv it creates (bench/.venv).
"""
import argparse
import resource


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--reactor", default="epoll", choices=["epoll", "poll", "select"])
    a = p.parse_args()

    # Idle runs hold thousands of connections.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    if a.reactor == "epoll":
        from twisted.internet import epollreactor as chosen
    elif a.reactor == "poll":
        from twisted.internet import pollreactor as chosen
    else:
        from twisted.internet import selectreactor as chosen
    chosen.install()

    from twisted.internet import protocol, reactor

    class Echo(protocol.Protocol):
        def dataReceived(self, data):
            self.transport.write(data)

    reactor.listenTCP(a.port, protocol.Factory.forProtocol(Echo), backlog=4096, interface="127.0.0.1")
    reactor.run()


if __name__ == "__main__":
    main()
