/* Shifter's in-container dropbear (udiImage/build_dropbear.sh copies this into the
 * source tree, and applies dropbear-shifter.patch, which reads the two SHIFTER_ options).
 * The server runs as the job's user inside the container: key authentication only,
 * against one root-written file per job, never root. */
#define DROPBEAR_SVR_PASSWORD_AUTH 0
#define DROPBEAR_SVR_PAM_AUTH 0
#define DROPBEAR_CLI_PASSWORD_AUTH 0
#define DROPBEAR_CLI_INTERACT_AUTH 0
#define DROPBEAR_X11FWD 0
#define DROPBEAR_SVR_AGENTFWD 0
#define DROPBEAR_CLI_AGENTFWD 0
#define DO_MOTD 0
/* the job's files, written by the prolog into the container (see shifter_wlm/sshd.py) */
#define SHIFTER_AUTHORIZED_KEYS "/var/run/udiImage/ssh/authorized_keys"
/* scp runs the wrapper that knows the job's port, key and known hosts */
#define DROPBEAR_PATH_SSH_PROGRAM "/opt/udiImage/bin/ssh"
/* sessions (and a remote `scp -t`) find the tools without the image's environment */
#define DEFAULT_PATH "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin:/opt/udiImage/bin"
/* the site's /etc/passwd names the user's host shell; an image without it gets this one */
#define SHIFTER_SHELL_FALLBACK "/bin/sh"
