/* stub: nothing from if_packet.h is used */
