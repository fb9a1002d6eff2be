// A Java HTTP server (the JDK's com.sun.net.httpserver) launched as a
// single source file with the default JVM settings:
//
//   java Server.java HOST PORT     (HOST "*": the wildcard address)
//
// An IPv4 HOST is bound as an IPv4-mapped address on an IPv6 socket
// (::ffff:127.0.0.1), as the JVM does unless java.net.preferIPv4Stack is
// set. On SIGTERM it stops accepting and gives exchanges in flight 5 s.
// rpwrap runs it with --pass bind.

import com.sun.net.httpserver.HttpServer;
import java.net.InetSocketAddress;

public class Server {
    public static void main(String[] args) throws Exception {
        int port = Integer.parseInt(args[1]);
        InetSocketAddress addr = args[0].equals("*") ? new InetSocketAddress(port) : new InetSocketAddress(args[0], port);
        HttpServer server = HttpServer.create(addr, 0);
        server.createContext("/", exchange -> {
            byte[] body = "ok\n".getBytes();
            exchange.sendResponseHeaders(200, body.length);
            exchange.getResponseBody().write(body);
            exchange.close();
        });
        server.start();
        Runtime.getRuntime().addShutdownHook(new Thread(() -> server.stop(5)));
    }
}
