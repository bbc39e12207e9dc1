/*
 * A coapgw device for Zephyr RTOS and the nRF Connect SDK (which builds on Zephyr): it reports a
 * reading every CONFIG_COAPGW_INTERVAL_S seconds as POST /{type}/{id} with a JSON object, with
 * the sending policy of coapgw's docs/devices.md:
 *
 *   - NON while the oldest unconfirmed reading is younger than CONFIG_COAPGW_NON_DEADLINE_S,
 *     listening briefly for the gateway's NON 2.04;
 *   - past it, CON with RFC 7252 retransmission (ACK_TIMEOUT 2 s, ACK_RANDOM_FACTOR 1.5,
 *     doubling, MAX_RETRANSMIT 4), following an empty ACK to the separate response;
 *   - 5.03: wait Max-Age seconds, then send again as CON; 4.01 with Echo: repeat once with it;
 *     other 4.xx: drop the reading.
 *
 * A snippet to start from, written against Zephyr 3.x's CoAP and socket APIs; coapgw's test suite
 * does not build it (the Python and C examples beside it run against the gateway in the suite).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <zephyr/kernel.h>
#include <zephyr/logging/log.h>
#include <zephyr/net/coap.h>
#include <zephyr/net/socket.h>
#include <zephyr/random/random.h>
#if defined(CONFIG_COAPGW_DTLS)
#include <zephyr/net/tls_credentials.h>
#endif

LOG_MODULE_REGISTER(coapgw_device, LOG_LEVEL_INF);

#define ACK_TIMEOUT_MS 2000
#define MAX_RETRANSMIT 4
#define NON_LISTEN_MS 500
#define DEFAULT_MAX_AGE 60
#define PSK_TAG 1

#if defined(CONFIG_COAPGW_DTLS)
#define COAPGW_PORT 5684
#else
#define COAPGW_PORT 5683
#endif

static uint8_t tx[256], rx[256];

struct answer {
	int code; /* class * 100 + detail (204, 503, ...), 0 for none */
	int max_age;
	uint8_t echo[40];
	uint8_t echo_len;
};

static int open_socket(void)
{
	struct sockaddr_in gw = {.sin_family = AF_INET, .sin_port = htons(COAPGW_PORT)};

	zsock_inet_pton(AF_INET, CONFIG_COAPGW_SERVER, &gw.sin_addr);
#if defined(CONFIG_COAPGW_DTLS)
	static const char identity[] = CONFIG_COAPGW_THING_TYPE "/" CONFIG_COAPGW_THING_ID;
	static const char psk[] = CONFIG_COAPGW_PSK;
	sec_tag_t tags[] = {PSK_TAG};

	tls_credential_add(PSK_TAG, TLS_CREDENTIAL_PSK, psk, strlen(psk));
	tls_credential_add(PSK_TAG, TLS_CREDENTIAL_PSK_ID, identity, strlen(identity));
	int sock = zsock_socket(AF_INET, SOCK_DGRAM, IPPROTO_DTLS_1_2);

	if (sock >= 0) {
		zsock_setsockopt(sock, SOL_TLS, TLS_SEC_TAG_LIST, tags, sizeof(tags));
	}
#else
	int sock = zsock_socket(AF_INET, SOCK_DGRAM, IPPROTO_UDP);
#endif
	if (sock < 0 || zsock_connect(sock, (struct sockaddr *)&gw, sizeof(gw)) < 0) {
		LOG_ERR("cannot reach %s: %d", CONFIG_COAPGW_SERVER, errno);
		return -1;
	}
	return sock; /* connect() runs the DTLS handshake; the session outlives sleeps (CID) */
}

static int build(struct coap_packet *req, uint8_t type, uint16_t id, const uint8_t *token,
		 const char *json, const struct answer *echo)
{
	int r = coap_packet_init(req, tx, sizeof(tx), COAP_VERSION_1, type, 8, token,
				 COAP_METHOD_POST, id);

	r = r ?: coap_packet_append_option(req, COAP_OPTION_URI_PATH, CONFIG_COAPGW_THING_TYPE,
					   strlen(CONFIG_COAPGW_THING_TYPE));
	r = r ?: coap_packet_append_option(req, COAP_OPTION_URI_PATH, CONFIG_COAPGW_THING_ID,
					   strlen(CONFIG_COAPGW_THING_ID));
	r = r ?: coap_append_option_int(req, COAP_OPTION_CONTENT_FORMAT,
					COAP_CONTENT_FORMAT_APP_JSON);
	if (echo && echo->echo_len) {
		r = r ?: coap_packet_append_option(req, 252 /* Echo, RFC 9175 */, echo->echo,
						   echo->echo_len);
	}
	r = r ?: coap_packet_append_payload_marker(req);
	return r ?: coap_packet_append_payload(req, json, strlen(json));
}

/* wait_answer waits up to ms for the answer to token: an empty ACK (of a CON) keeps waiting
 * for the separate response, which is acknowledged. */
static bool wait_answer(int sock, const uint8_t *token, uint16_t id, int ms, struct answer *a)
{
	int64_t until = k_uptime_get() + ms;
	int64_t left;

	while ((left = until - k_uptime_get()) > 0) {
		struct zsock_pollfd pfd = {.fd = sock, .events = ZSOCK_POLLIN};

		if (zsock_poll(&pfd, 1, (int)left) <= 0) {
			return false;
		}
		int n = zsock_recv(sock, rx, sizeof(rx), 0);
		struct coap_packet resp;
		struct coap_option opt;
		uint8_t tok[8];

		if (n <= 0 || coap_packet_parse(&resp, rx, n, NULL, 0) < 0) {
			continue;
		}
		uint8_t code = coap_header_get_code(&resp);
		uint8_t type = coap_header_get_type(&resp);

		if (type == COAP_TYPE_ACK && code == COAP_CODE_EMPTY && coap_header_get_id(&resp) == id) {
			until = k_uptime_get() + 93000; /* the answer comes later, as a CON */
			continue;
		}
		if (coap_header_get_token(&resp, tok) != 8 || memcmp(tok, token, 8) != 0) {
			continue; /* a late answer to an earlier request */
		}
		if (type == COAP_TYPE_CON) { /* a separate response: acknowledge it */
			struct coap_packet ack;

			if (coap_ack_init(&ack, &resp, tx, sizeof(tx), COAP_CODE_EMPTY) == 0) {
				zsock_send(sock, ack.data, ack.offset, 0);
			}
		}
		a->code = (code >> 5) * 100 + (code & 0x1f);
		int max_age = coap_get_option_int(&resp, COAP_OPTION_MAX_AGE);

		a->max_age = max_age >= 0 ? max_age : DEFAULT_MAX_AGE;
		a->echo_len = 0;
		if (coap_find_options(&resp, 252, &opt, 1) == 1 && opt.len <= sizeof(a->echo)) {
			memcpy(a->echo, opt.value, opt.len);
			a->echo_len = opt.len;
		}
		return true;
	}
	return false;
}

/* send_reading sends json once as NON, or as CON with RFC 7252 retransmission, and fills a. */
static bool send_reading(int sock, const char *json, bool confirmable, const struct answer *echo,
			 struct answer *a)
{
	struct coap_packet req;
	uint8_t token[8];
	uint16_t id = coap_next_id();

	sys_rand_get(token, sizeof(token));
	if (build(&req, confirmable ? COAP_TYPE_CON : COAP_TYPE_NON_CON, id, token, json, echo) < 0) {
		return false;
	}
	if (!confirmable) {
		zsock_send(sock, req.data, req.offset, 0);
		return wait_answer(sock, token, id, NON_LISTEN_MS, a);
	}
	/* Same MID and token on every retransmission; the first wait is 2-3 s, then doubles. */
	int timeout = ACK_TIMEOUT_MS + (int)(sys_rand32_get() % (ACK_TIMEOUT_MS / 2));

	for (int i = 0; i <= MAX_RETRANSMIT; i++, timeout *= 2) {
		zsock_send(sock, req.data, req.offset, 0);
		if (wait_answer(sock, token, id, timeout, a)) {
			return true;
		}
	}
	return false;
}

int main(void)
{
	int sock = open_socket();
	int64_t unconfirmed_since = -1; /* the oldest reading not yet answered 2.04 */

	if (sock < 0) {
		return 0;
	}
	for (int seq = 1;; seq++) {
		char json[64];
		struct answer a = {0}, echo = {0};
		bool echoed = false;

		/* Replace with the sensor's reading: several values in one object, not one request each. */
		snprintf(json, sizeof(json), "{\"seq\":%d,\"temp\":%d.%d}", seq, 20 + seq % 5, seq % 10);
		if (unconfirmed_since < 0) {
			unconfirmed_since = k_uptime_get();
		}
		bool confirmable = k_uptime_get() - unconfirmed_since >=
				   (int64_t)CONFIG_COAPGW_NON_DEADLINE_S * 1000;

		while (send_reading(sock, json, confirmable, &echo, &a)) {
			if (a.code == 204) {
				unconfirmed_since = -1; /* stored: nothing older needs resending */
				break;
			}
			if (a.code == 503) { /* spool full, shutting down, or over the rate */
				k_sleep(K_SECONDS(a.max_age));
				confirmable = true;
				continue;
			}
			if (a.code == 401 && a.echo_len && !echoed) {
				echo = a;
				echoed = true;
				continue;
			}
			LOG_WRN("reading %d dropped: %d.%02d", seq, a.code / 100, a.code % 100);
			break;
		}
		k_sleep(K_SECONDS(CONFIG_COAPGW_INTERVAL_S));
	}
}
