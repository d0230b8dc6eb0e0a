// libxcrypt (Debian's libcrypt1, which libc6-dev's libcrypt-dev declares): the crypt(3)
// family Dovecot's passwd-file schemes SHA512-CRYPT, SHA256-CRYPT and BLF-CRYPT are made of.
#include <crypt.h>
