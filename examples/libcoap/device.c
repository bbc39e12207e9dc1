/*
 * A coapgw device in C with libcoap 3 (4.3.x): it reports readings to the gateway with the
 * sending policy of docs/devices.md.
 *
 *   - Readings go out as NON (one transmission, no wait for an ACK) while the oldest unconfirmed
 *     reading is younger than --non-deadline seconds; the gateway answers a NON with a NON 2.04
 *     once the record is stored, and the device listens for it for --listen seconds.
 *   - Past the deadline the reading goes out as CON, which libcoap retransmits as RFC 7252 says
 *     (ACK_TIMEOUT 2 s, ACK_RANDOM_FACTOR 1.5, doubling, MAX_RETRANSMIT 4). A 2.04 confirms
 *     every older reading too.
 *   - 5.03 Service Unavailable: wait Max-Age seconds (60 when absent), then send the reading
 *     again as CON. 4.01 with an Echo option: repeat once with that Echo value (RFC 9175). Any
 *     other 4.xx: drop the reading and go on.
 *   - No answer at all to a CON: keep the reading unconfirmed and try again with the next one.
 *
 * Each reading is {"seq":n,"temp":...}; the device prints one JSON line per transmission and
 * answer ({"t","seq","type","code","max_age"}; t in seconds since start) and a last line {"done":true,"confirmed":[...]}.
 *
 * Build (Debian: apt-get install libcoap3-dev; the openssl or gnutls variant for DTLS):
 *   gcc -O2 -Wall -o device examples/libcoap/device.c $(pkg-config --cflags --libs libcoap-3-openssl)
 * Run:
 *   ./device --gateway coap://127.0.0.1 --thing sensor/c-1 --readings 5
 *   ./device --gateway coaps://127.0.0.1 --thing sensor/c-1 --identity sensor/c-1 --key "$PSK_TEXT"
 * (identity and key from `coapgw device add sensor/c-1`: its psk-text; or --key-hex with the
 * psk of `coapgw device add` or `coapgw device key`).
 */
#include <coap3/coap.h>

#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define DEFAULT_MAX_AGE 60 /* RFC 7252 §5.10.5 */
#define MAX_READINGS 1000

/* The exchange in progress: one request at a time. */
static struct {
  uint8_t token[8];
  size_t token_len;
  int done;         /* an answer or a NACK arrived */
  int code;         /* class*100 + detail, e.g. 204; 0 for none */
  unsigned max_age; /* Max-Age of the answer, DEFAULT_MAX_AGE when absent */
  int has_max_age;
  uint8_t echo[40];
  size_t echo_len;
  char diagnostic[128];
} ex;

static double start_s;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static coap_response_t on_response(coap_session_t *session, const coap_pdu_t *sent,
                                   const coap_pdu_t *received, const coap_mid_t mid) {
  (void)session, (void)sent, (void)mid;
  coap_bin_const_t tok = coap_pdu_get_token(received);
  if (tok.length != ex.token_len || memcmp(tok.s, ex.token, tok.length) != 0)
    return COAP_RESPONSE_OK; /* a late answer to an earlier request */
  coap_pdu_code_t c = coap_pdu_get_code(received);
  ex.code = COAP_RESPONSE_CLASS(c) * 100 + (c & 0x1f);
  coap_opt_iterator_t oi;
  coap_opt_t *o = coap_check_option(received, COAP_OPTION_MAXAGE, &oi);
  ex.has_max_age = o != NULL;
  ex.max_age = o ? coap_decode_var_bytes(coap_opt_value(o), coap_opt_length(o)) : DEFAULT_MAX_AGE;
  o = coap_check_option(received, COAP_OPTION_ECHO, &oi);
  ex.echo_len = 0;
  if (o && coap_opt_length(o) <= sizeof ex.echo) {
    ex.echo_len = coap_opt_length(o);
    memcpy(ex.echo, coap_opt_value(o), ex.echo_len);
  }
  size_t len = 0;
  const uint8_t *data = NULL;
  ex.diagnostic[0] = '\0';
  if (ex.code >= 400 && coap_get_data(received, &len, &data)) {
    /* The gateway's diagnostics are short text; keep it JSON-safe. */
    size_t j = 0;
    for (size_t i = 0; i < len && j + 1 < sizeof ex.diagnostic; i++)
      ex.diagnostic[j++] = (data[i] == '"' || data[i] == '\\' || data[i] < 0x20) ? '_' : (char)data[i];
    ex.diagnostic[j] = '\0';
  }
  ex.done = 1;
  return COAP_RESPONSE_OK;
}

static void on_nack(coap_session_t *session, const coap_pdu_t *sent, const coap_nack_reason_t reason,
                    const coap_mid_t mid) {
  (void)session, (void)mid, (void)reason;
  if (sent) {
    coap_bin_const_t tok = coap_pdu_get_token(sent);
    if (tok.length != ex.token_len || memcmp(tok.s, ex.token, tok.length) != 0)
      return;
  }
  ex.code = 0;
  ex.done = 1;
}

/* exchange sends one POST of payload to path and waits for its answer: up to listen seconds for a
 * NON, until libcoap gives up retransmitting for a CON. It returns the code (204, 503, ...) or
 * 0 when none came. */
static int exchange(coap_context_t *ctx, coap_session_t *session, const char *path, int seq,
                    const char *payload, int confirmable, double listen, const uint8_t *echo,
                    size_t echo_len) {
  coap_pdu_t *pdu = coap_pdu_init(confirmable ? COAP_MESSAGE_CON : COAP_MESSAGE_NON, COAP_REQUEST_CODE_POST,
                                  coap_new_message_id(session), coap_session_max_pdu_size(session));
  if (!pdu)
    return 0;
  coap_session_new_token(session, &ex.token_len, ex.token);
  coap_add_token(pdu, ex.token_len, ex.token);
  coap_optlist_t *opts = NULL;
  uint8_t buf[8];
  for (const char *seg = path; *seg;) { /* one Uri-Path option per segment: type, id */
    size_t n = strcspn(seg, "/");
    coap_insert_optlist(&opts, coap_new_optlist(COAP_OPTION_URI_PATH, n, (const uint8_t *)seg));
    seg += n + (seg[n] == '/');
  }
  coap_insert_optlist(&opts, coap_new_optlist(COAP_OPTION_CONTENT_FORMAT,
                                              coap_encode_var_safe(buf, sizeof buf, COAP_MEDIATYPE_APPLICATION_JSON), buf));
  if (echo_len)
    coap_insert_optlist(&opts, coap_new_optlist(COAP_OPTION_ECHO, echo_len, echo));
  coap_add_optlist_pdu(pdu, &opts);
  coap_delete_optlist(opts);
  coap_add_data(pdu, strlen(payload), (const uint8_t *)payload);
  ex.done = 0;
  ex.code = 0;
  if (coap_send(session, pdu) == COAP_INVALID_MID) {
    printf("{\"t\":%.3f,\"seq\":%d,\"type\":\"%s\",\"code\":\"none\",\"error\":\"send\"}\n", now_s() - start_s, seq,
           confirmable ? "CON" : "NON");
    return 0;
  }
  /* A CON ends with an answer or a NACK after MAX_RETRANSMIT (93 s at most with RFC values). */
  double deadline = now_s() + (confirmable ? 100.0 : listen);
  while (!ex.done && now_s() < deadline)
    coap_io_process(ctx, 50);
  if (!ex.done || ex.code == 0) {
    printf("{\"t\":%.3f,\"seq\":%d,\"type\":\"%s\",\"code\":\"none\"}\n", now_s() - start_s, seq, confirmable ? "CON" : "NON");
    fflush(stdout);
    return 0;
  }
  printf("{\"t\":%.3f,\"seq\":%d,\"type\":\"%s\",\"code\":\"%d.%02d\"", now_s() - start_s, seq, confirmable ? "CON" : "NON",
         ex.code / 100, ex.code % 100);
  if (ex.has_max_age)
    printf(",\"max_age\":%u", ex.max_age);
  else
    printf(",\"max_age\":null");
  printf(",\"diagnostic\":\"%s\"}\n", ex.diagnostic);
  fflush(stdout);
  return ex.code;
}

static void wait_s(coap_context_t *ctx, double s) {
  double until = now_s() + s;
  while (now_s() < until)
    coap_io_process(ctx, 50); /* keeps answering the gateway's retransmissions meanwhile */
}

static void usage(const char *argv0) {
  fprintf(stderr,
          "usage: %s [--gateway coap://HOST[:PORT]] [--thing TYPE/ID] [--readings N] [--interval S]\n"
          "          [--non-deadline S] [--listen S] [--identity ID --key PSK_TEXT | --key-hex HEX]\n",
          argv0);
  exit(2);
}

int main(int argc, char **argv) {
  const char *gateway = "coap://127.0.0.1", *thing = "sensor/c-1", *identity = NULL, *key = NULL;
  uint8_t keybuf[64];
  size_t keylen = 0;
  int readings = 5;
  double interval = 1.0, non_deadline = 900.0, listen = 0.5;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!v)
      usage(argv[0]);
    if (!strcmp(a, "--gateway")) gateway = v;
    else if (!strcmp(a, "--thing")) thing = v;
    else if (!strcmp(a, "--readings")) readings = atoi(v);
    else if (!strcmp(a, "--interval")) interval = atof(v);
    else if (!strcmp(a, "--non-deadline")) non_deadline = atof(v);
    else if (!strcmp(a, "--listen")) listen = atof(v);
    else if (!strcmp(a, "--identity")) identity = v;
    else if (!strcmp(a, "--key")) key = v, keylen = strlen(v);
    else if (!strcmp(a, "--key-hex")) {
      size_t n = strlen(v);
      if (n % 2 || n / 2 > sizeof keybuf)
        usage(argv[0]);
      for (keylen = 0; keylen < n / 2; keylen++)
        if (sscanf(v + 2 * keylen, "%2hhx", &keybuf[keylen]) != 1)
          usage(argv[0]);
      key = (const char *)keybuf;
    }
    else usage(argv[0]);
    i++;
  }
  if (readings < 1 || readings > MAX_READINGS || !!identity != !!key)
    usage(argv[0]);

  start_s = now_s();
  coap_startup();
  coap_set_log_level(LOG_WARNING);
  coap_uri_t uri;
  if (coap_split_uri((const uint8_t *)gateway, strlen(gateway), &uri) < 0) {
    fprintf(stderr, "device: bad gateway URI %s\n", gateway);
    return 2;
  }
  int dtls = uri.scheme == COAP_URI_SCHEME_COAPS;
  if (dtls && !identity) {
    fprintf(stderr, "device: coaps needs --identity and --key\n");
    return 2;
  }
  if (dtls && !coap_dtls_is_supported()) {
    fprintf(stderr, "device: this libcoap has no DTLS: link libcoap-3-openssl or libcoap-3-gnutls\n");
    return 2;
  }
  char host[256], port[8];
  snprintf(host, sizeof host, "%.*s", (int)uri.host.length, (const char *)uri.host.s);
  snprintf(port, sizeof port, "%u", uri.port);
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_DGRAM}, *res;
  if (getaddrinfo(host, port, &hints, &res) != 0) {
    fprintf(stderr, "device: cannot resolve %s\n", host);
    return 1;
  }
  coap_address_t dst;
  coap_address_init(&dst);
  memcpy(&dst.addr, res->ai_addr, res->ai_addrlen);
  dst.size = res->ai_addrlen;
  freeaddrinfo(res);

  coap_context_t *ctx = coap_new_context(NULL);
  coap_session_t *session;
  if (dtls) {
    coap_dtls_cpsk_t psk = {.version = COAP_DTLS_CPSK_SETUP_VERSION};
    psk.psk_info.identity.s = (const uint8_t *)identity;
    psk.psk_info.identity.length = strlen(identity);
    psk.psk_info.key.s = (const uint8_t *)key;
    psk.psk_info.key.length = keylen;
    session = coap_new_client_session_psk2(ctx, NULL, &dst, COAP_PROTO_DTLS, &psk);
  } else {
    session = coap_new_client_session(ctx, NULL, &dst, COAP_PROTO_UDP);
  }
  if (!ctx || !session) {
    fprintf(stderr, "device: cannot open a session to %s\n", gateway);
    return 1;
  }
  coap_register_response_handler(ctx, on_response);
  coap_register_nack_handler(ctx, on_nack);

  int confirmed[MAX_READINGS], nconfirmed = 0;
  double unconfirmed_since = -1; /* time of the oldest reading not yet answered 2.04 */
  srand((unsigned)time(NULL));
  for (int seq = 1; seq <= readings; seq++) {
    char payload[64];
    snprintf(payload, sizeof payload, "{\"seq\":%d,\"temp\":%.2f}", seq, 20 + (rand() % 500) / 100.0);
    double t = now_s();
    if (unconfirmed_since < 0)
      unconfirmed_since = t;
    int confirmable = t - unconfirmed_since >= non_deadline;
    int echoed = 0;
    uint8_t echo[40];
    size_t echo_len = 0;
    for (;;) {
      int code = exchange(ctx, session, thing, seq, payload, confirmable, listen, echo, echo_len);
      if (code == 204) {
        unconfirmed_since = -1; /* stored; nothing older needs resending */
        confirmed[nconfirmed++] = seq;
        break;
      }
      if (code == 503) { /* back off as told, then insist */
        wait_s(ctx, ex.max_age);
        confirmable = 1;
        continue;
      }
      if (code == 401 && ex.echo_len && !echoed) { /* prove the address, once */
        memcpy(echo, ex.echo, ex.echo_len);
        echo_len = ex.echo_len;
        echoed = 1;
        continue;
      }
      break; /* no answer (try with the next reading), or a 4.xx: dropped */
    }
    if (seq < readings)
      wait_s(ctx, interval);
  }
  printf("{\"done\":true,\"confirmed\":[");
  for (int i = 0; i < nconfirmed; i++)
    printf("%s%d", i ? "," : "", confirmed[i]);
  printf("]}\n");
  coap_session_release(session);
  coap_free_context(ctx);
  coap_cleanup();
  return 0;
}
